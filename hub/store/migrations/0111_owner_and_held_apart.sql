-- Issue 20: data about a person that the hub cannot place in one person's record (a subject
-- named by an NHS number nobody the writer may see holds, a contained Patient, a Group or Bundle
-- of several people, a Provenance over several records) is kept visible only to the
-- organisation that wrote it: `owner` is that organisation's identifier as `system|value`
-- (`hub` for the hub's own writes), NULL for everything placed in a record or about no one.
-- Visibility (hub/search/access.py) tests it before consent.
ALTER TABLE resource ADD COLUMN owner text;
ALTER TABLE resource_version ADD COLUMN owner text;
ALTER TABLE outbox ADD COLUMN owner text;

-- A Patient an API client wrote whose NHS number, service number or council id belongs to a
-- person that client may not see: kept apart, as the writer's own record (owner set), so the
-- writer is told nothing it may not know and the shared record stays one; the review pass
-- raises a review Task in the existing person's record for an operator to reconcile.
CREATE TABLE held_apart (
    patient_id   text        NOT NULL,   -- the writer's own Patient (owner set)
    duplicate_of text        NOT NULL,   -- the existing Patient in the shared record
    owner        text        NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now(),
    reviewed     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (patient_id, duplicate_of)
);
CREATE INDEX held_apart_unreviewed ON held_apart (held_at) WHERE NOT reviewed;
