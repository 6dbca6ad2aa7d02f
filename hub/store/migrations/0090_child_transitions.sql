-- Growing up (issue 17): one row per transition step the plan worker's scheduler raised for a
-- person (preparing for adulthood, continuing care check, transfer at 18, the adult plan, a
-- young carer's reassessment, ...). A scheduler claims (person, step) with INSERT … ON CONFLICT
-- DO NOTHING in the transaction that writes the Task or plan, so each step is raised exactly
-- once however many schedulers run, and never again after a worker has completed it.
CREATE TABLE IF NOT EXISTS child_transition_raised (
    patient_id  text        NOT NULL,
    step        text        NOT NULL,
    written     text        NOT NULL,   -- the Task or CarePlan it wrote (Type/id)
    raised_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, step)
);
