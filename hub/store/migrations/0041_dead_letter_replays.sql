-- Dead letters replayed from the workspace's operations page: who replayed which, and when, so
-- the page can say so and show whether the replayed message has since reached the record.
CREATE TABLE dead_letter_replay (
    letter_id    text        NOT NULL,
    envelope_id  text        NOT NULL,
    replayed_by  text        NOT NULL,   -- Practitioner/<id> of the operator
    replayed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (letter_id, replayed_at)
);
