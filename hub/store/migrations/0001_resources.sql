-- The record store: every version of every resource, the current version for fast reads,
-- and one search index table per FHIR search parameter type (current versions only).

CREATE TABLE resource (
    res_type     text        NOT NULL,
    res_id       text        NOT NULL,
    version      integer     NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    content      json,                        -- NULL once deleted; json (not jsonb) keeps the text served as written
    PRIMARY KEY (res_type, res_id)
);
CREATE INDEX resource_type_updated ON resource (res_type, last_updated);

CREATE TABLE resource_version (
    res_type     text        NOT NULL,
    res_id       text        NOT NULL,
    version      integer     NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    method       text        NOT NULL,       -- POST, PUT or DELETE: Bundle.entry.request in _history
    content      json,
    PRIMARY KEY (res_type, res_id, version)
);
CREATE INDEX resource_version_updated ON resource_version (last_updated);
CREATE INDEX resource_version_type_updated ON resource_version (res_type, last_updated);

-- Search index rows. (res_type, res_id) is the resource; param is the search parameter code.
CREATE TABLE idx_token (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    system   text,                 -- NULL when the value has no system
    code     text,                 -- NULL for text-only CodeableConcepts
    text     text                  -- lower-cased display / text, for :text
);
CREATE INDEX idx_token_code ON idx_token (res_type, param, code);
CREATE INDEX idx_token_res ON idx_token (res_type, res_id);

CREATE TABLE idx_string (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    value_norm  text NOT NULL,     -- lower-cased, accents removed: default prefix matching
    value_exact text NOT NULL      -- as written: :exact
);
CREATE INDEX idx_string_norm ON idx_string (res_type, param, value_norm text_pattern_ops);
CREATE INDEX idx_string_res ON idx_string (res_type, res_id);

CREATE TABLE idx_reference (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    target_type text,              -- NULL for absolute URLs and canonicals
    target_id   text,
    url         text               -- the reference as written (absolute or canonical)
);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_param ON idx_reference (res_type, param, target_id);
CREATE INDEX idx_reference_res ON idx_reference (res_type, res_id);

CREATE TABLE idx_date (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    low  timestamptz NOT NULL,     -- '-infinity' when open
    high timestamptz NOT NULL      -- 'infinity' when open; exclusive upper bound
);
CREATE INDEX idx_date_param ON idx_date (res_type, param, low, high);
CREATE INDEX idx_date_res ON idx_date (res_type, res_id);

CREATE TABLE idx_number (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    low  numeric NOT NULL,         -- implicit precision range of the value
    high numeric NOT NULL
);
CREATE INDEX idx_number_param ON idx_number (res_type, param, low, high);
CREATE INDEX idx_number_res ON idx_number (res_type, res_id);

CREATE TABLE idx_quantity (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    low  numeric NOT NULL,
    high numeric NOT NULL,
    system text,
    code   text,
    unit   text
);
CREATE INDEX idx_quantity_param ON idx_quantity (res_type, param, low, high);
CREATE INDEX idx_quantity_res ON idx_quantity (res_type, res_id);

CREATE TABLE idx_uri (
    res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
    uri text NOT NULL
);
CREATE INDEX idx_uri_param ON idx_uri (res_type, param, uri);
CREATE INDEX idx_uri_res ON idx_uri (res_type, res_id);
