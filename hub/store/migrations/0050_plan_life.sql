-- The plan's life (issue 13).
--
-- plan_followup: a queue of plans (and review meetings, outcome responses) the plan worker must
-- look at, written in the same transaction as the resource that asks for it, on every write
-- path; workers on several machines take rows with FOR UPDATE SKIP LOCKED, so each is handled
-- by one worker, and a row goes only when its transaction commits (a crash hands it back).
CREATE TABLE plan_followup (
    seq        bigserial   PRIMARY KEY,
    res_type   text        NOT NULL,   -- CarePlan, Encounter or QuestionnaireResponse
    res_id     text        NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now()
);

-- plan_review_raised: one row per review the scheduler raised, keyed by plan and due date. A
-- scheduler claims the (plan, due date) with INSERT … ON CONFLICT DO NOTHING in the transaction
-- that writes the review Task, so several schedulers running at once raise each review exactly
-- once.
CREATE TABLE plan_review_raised (
    plan_id    text        NOT NULL,
    due        date        NOT NULL,
    task_id    text        NOT NULL,
    raised_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, due)
);
