-- Every literal local reference (`Type/id`, no version) each current resource makes, wherever it
-- sits in the resource: what referential integrity on delete asks ("who still refers to this?").
-- The search index (idx_reference) holds only references that a search parameter covers, so it
-- cannot answer that. Rows are kept with the resource's other index rows: replaced on every new
-- version, removed when the resource is deleted. A versioned reference (`Type/id/_history/n`)
-- is not kept: the version it names stays in history when the resource is deleted.
CREATE TABLE resource_link (
    res_type    text NOT NULL,
    res_id      text NOT NULL,
    target_type text NOT NULL,
    target_id   text NOT NULL
);
CREATE INDEX resource_link_source ON resource_link (res_type, res_id);
CREATE INDEX resource_link_target ON resource_link (target_type, target_id);

-- The references of what the record already holds (a Bundle's entries resolve inside it).
INSERT INTO resource_link (res_type, res_id, target_type, target_id)
SELECT DISTINCT r.res_type, r.res_id, m[1], m[2]
FROM resource r,
     jsonb_path_query(r.content::jsonb, 'lax $.**.reference') AS ref,
     regexp_match(ref #>> '{}', '^([A-Z][A-Za-z]+)/([A-Za-z0-9.-]{1,64})$') AS m
WHERE NOT r.deleted AND r.res_type <> 'Bundle' AND jsonb_typeof(ref) = 'string' AND m IS NOT NULL;
