-- Time-based topics (issue 15: handover overdue, review due, review overdue): one row per
-- deadline the notifier's scheduler has raised, keyed by topic, focus and due date. The row is
-- written in the transaction that queues the event for every matching subscription, so however
-- many notifiers run, and across restarts, each deadline is raised exactly once.
CREATE TABLE subscription_deadline (
    topic     text        NOT NULL,   -- the topic's canonical
    res_type  text        NOT NULL,
    res_id    text        NOT NULL,
    due       date        NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, res_type, res_id, due)
);
