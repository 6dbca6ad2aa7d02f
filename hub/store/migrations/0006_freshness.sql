-- When each source last said something about each resource (its envelope's received-at), so
-- that an older message replayed after a newer one cannot put the older words back.
CREATE TABLE source_freshness (
    res_type    text        NOT NULL,
    res_id      text        NOT NULL,
    source      text        NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (res_type, res_id, source)
);
