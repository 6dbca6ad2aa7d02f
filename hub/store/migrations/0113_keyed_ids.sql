-- Issue 20: ids the hub derives from source data (hub/fhir/ids.py) are keyed with a secret
-- (HMAC-SHA256 with the key in HUB_ID_KEY_FILE), so nobody outside the hub can compute "the id
-- of PTSD for service number X". Records written before keep their ids (partners may hold them);
-- id_alias maps the keyed id a feed now derives to the id the same source record was given
-- before, so a replay of an old message still lands on the same resource. Filled once, at the
-- first start with a key (hub/store/idkeys.py), from every id of the old derived form.
CREATE TABLE id_alias (
    res_type  text NOT NULL,
    keyed_id  text NOT NULL,
    legacy_id text NOT NULL,
    PRIMARY KEY (res_type, keyed_id)
);

-- Which key made this record's ids (its fingerprint, never the key): a process started with
-- another key refuses to start rather than derive different ids for the same source records.
CREATE TABLE id_key (
    fingerprint    text        PRIMARY KEY,
    aliases_built  timestamptz
);
