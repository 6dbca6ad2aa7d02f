-- The bus journal (hub/bus/journal.py): every envelope a connector acknowledged and the record
-- does not hold yet. Written before the acknowledgement, deleted in the recorder's transaction,
-- republished to the broker when it (re)starts. On the embedded broker, which keeps topics in
-- memory, this table is what makes an acknowledgement a promise.
CREATE TABLE IF NOT EXISTS bus_journal (
    envelope_id text PRIMARY KEY,
    record_key bytea,
    payload bytea NOT NULL,
    headers jsonb NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL while pending; the reason code once the message was dead-lettered
    dead_letter text
);
CREATE INDEX IF NOT EXISTS bus_journal_pending ON bus_journal (accepted_at) WHERE dead_letter IS NULL;
