-- The event pipeline's tables.

-- Change events waiting to be published to Kafka (ipc.record.events): one row per committed
-- write, inserted in the write's own transaction, deleted by the relay once the broker has it.
CREATE TABLE outbox (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    res_type text    NOT NULL,
    res_id   text    NOT NULL,
    version  integer NOT NULL,
    method   text    NOT NULL          -- POST, PUT or DELETE
);

-- Which shared-record Patient each source's person record resolved to. Once a source record is
-- linked it stays linked (replays resolve the same way); a merge re-points it.
CREATE TABLE person_link (
    source     text NOT NULL,
    source_id  text NOT NULL,
    patient_id text NOT NULL,
    method     text NOT NULL,          -- nhs-number, identifier, new, merge
    PRIMARY KEY (source, source_id)
);
CREATE INDEX person_link_patient ON person_link (patient_id);
-- New people not yet compared with everyone else (the recorder's review pass runs after the
-- batch that created them has committed, so concurrent lanes see each other's new people).
CREATE INDEX person_link_unreviewed ON person_link (patient_id) WHERE method = 'new-unreviewed';
