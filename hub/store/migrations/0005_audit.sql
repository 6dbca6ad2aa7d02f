-- Audit: one compact row per audited API request (who, what, when, outcome), rendered as a FHIR
-- AuditEvent only when read. Patients and touched resources are arrays with GIN indexes, so
-- "who looked at this person" is one index lookup however many people a search disclosed.
-- Few indexes: every API request adds a row, so each index is paid for on the hot path.

CREATE TABLE audit_event (
    id                  uuid        PRIMARY KEY,
    recorded            timestamptz NOT NULL,
    interaction         text        NOT NULL,   -- restful-interaction code (read, search-type, ...)
    action              char(1)     NOT NULL,   -- C R U D E
    outcome             smallint    NOT NULL,   -- 0, 4, 8, 12
    status              smallint    NOT NULL,   -- HTTP status answered (0: none)
    method              text        NOT NULL,
    path                text        NOT NULL,
    query               text        NOT NULL,
    client_id           text,                   -- NULL when the caller was not authenticated
    organisation        text,
    organisation_system text,
    partner_class       text,
    purpose_of_use      text,
    token_id            text,
    address             text,
    patients            text[]      NOT NULL,   -- Patient ids disclosed, written or attempted
    entities            text[]      NOT NULL,   -- Type/id touched (at most 100)
    seq                 bigint      GENERATED ALWAYS AS IDENTITY  -- write order: a search's snapshot for paging
);
CREATE INDEX audit_event_recorded ON audit_event (recorded);
CREATE INDEX audit_event_patients ON audit_event USING gin (patients);
CREATE INDEX audit_event_entities ON audit_event USING gin (entities);
CREATE INDEX audit_event_client ON audit_event (client_id, recorded);
