-- Bulk Data export jobs ($export, FHIR Bulk Data Access 2.0): one row per kick-off, claimed by
-- whichever export runner is free (FOR UPDATE SKIP LOCKED), with a lease so a runner that dies
-- mid-export hands the job to another. The caller's access (scopes, partner class, organisation,
-- consent defaults) is kept with the job: the export holds exactly what that caller may read.

CREATE TABLE bulk_export (
    id               uuid        PRIMARY KEY,
    client_id        text        NOT NULL,   -- only this client (and person, if any) may poll and download
    user_ref         text,                   -- the signed-in person an app asked for (Practitioner/<id>)
    request          text        NOT NULL,   -- the kick-off URL as asked (the manifest's `request`)
    level            text        NOT NULL,   -- system, patient, group
    params           jsonb       NOT NULL,   -- types, since, type filters, group members, warnings
    access           jsonb       NOT NULL,   -- the caller's Access, to run the export under
    status           text        NOT NULL,   -- queued, running, completed, failed, cancelled
    progress         text        NOT NULL DEFAULT '',
    error            text,
    created          timestamptz NOT NULL,
    started          timestamptz,
    finished         timestamptz,
    transaction_time timestamptz,
    expires          timestamptz,
    lease_until      timestamptz,
    attempts         integer     NOT NULL DEFAULT 0
);
CREATE INDEX bulk_export_waiting ON bulk_export (created) WHERE status IN ('queued', 'running');
CREATE INDEX bulk_export_client ON bulk_export (client_id) WHERE status IN ('queued', 'running');

-- The files a completed export wrote: which resources (type, count) and whose (patients, so the
-- download of a file is recorded in each person's audit trail).
CREATE TABLE bulk_export_file (
    export_id uuid    NOT NULL REFERENCES bulk_export (id) ON DELETE CASCADE,
    name      text    NOT NULL,   -- the file's name in the export's folder (also its URL's last part)
    kind      text    NOT NULL,   -- output, deleted, error
    res_type  text    NOT NULL,
    count     integer NOT NULL,
    bytes     bigint  NOT NULL,
    patients  text[]  NOT NULL,
    PRIMARY KEY (export_id, name)
);
