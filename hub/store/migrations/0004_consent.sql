-- Consent-based access: every resource (and version, and change event) carries the patient
-- whose record holds it and the record part it belongs to (hub/consent/parts.py decides both
-- at write time); consent_grant holds what each person's active IPC record-sharing Consents
-- permit or deny, written in the Consent's own transaction. Queries join these (see
-- hub/search/access.py), so access is enforced in SQL, paging and totals included.

ALTER TABLE resource ADD COLUMN patient_id text, ADD COLUMN part text;
ALTER TABLE resource_version ADD COLUMN patient_id text, ADD COLUMN part text;
ALTER TABLE outbox ADD COLUMN patient_id text, ADD COLUMN part text;
CREATE INDEX resource_patient ON resource (patient_id) WHERE patient_id IS NOT NULL;

CREATE TABLE consent_grant (
    consent_id text    NOT NULL,   -- the Consent's logical id: its grants are replaced on each write
    patient_id text    NOT NULL,
    role       text    NOT NULL,   -- ipc-consent-partner code: nhs, local-authority, lead-charity, ...
    org_id     text,               -- Organization id (matched on its identifier); NULL: the whole class
    org_code   text,               -- an organisation identifier value named directly
    part       text    NOT NULL,   -- ipc-record-part code
    permit     boolean NOT NULL    -- false: a nested deny provision
);
CREATE INDEX consent_grant_patient ON consent_grant (patient_id, part);
CREATE INDEX consent_grant_consent ON consent_grant (consent_id);

-- May a caller see a row of this patient's record in this part? The rule (hub/search/access.py
-- says why): a matching deny wins; else a matching permit; else, if no permit for this patient
-- names the caller at all, the caller's class default. A grant matches when its role is one of
-- the caller's (`charity` callers also hold `lead-charity`) and it names no organisation, or the
-- caller's: by identifier value, or an Organization whose identifier is the caller's code.
-- PL/pgSQL, not SQL, on purpose: its one query is planned once per connection, so the queries
-- that call it (every read and search) stay as cheap to plan as they were without consent.
CREATE FUNCTION consent_visible(p_patient text, p_part text, p_roles text[], p_org text,
                                p_org_system text, p_defaults text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    denied boolean;
    permitted boolean;
    named boolean;
BEGIN
    IF p_patient IS NULL THEN
        RETURN true;
    END IF;
    SELECT coalesce(bool_or(NOT g.permit AND g.part = p_part), false),
           coalesce(bool_or(g.permit AND g.part = p_part), false),
           coalesce(bool_or(g.permit), false)
      INTO denied, permitted, named
      FROM consent_grant g
     WHERE g.patient_id = p_patient
       AND g.role = ANY (p_roles)
       AND ((g.org_id IS NULL AND g.org_code IS NULL)
            OR g.org_code = p_org
            OR g.org_id IN (SELECT o.res_id FROM idx_token o
                             WHERE o.res_type = 'Organization' AND o.param = 'identifier'
                               AND o.code = p_org AND (p_org_system IS NULL OR o.system = p_org_system)));
    IF denied THEN
        RETURN false;
    END IF;
    RETURN permitted OR (NOT named AND p_part = ANY (p_defaults));
END
$$;

-- Rows written before this migration: placed by the same rules, approximated in SQL for the
-- types that carry them (new writes use hub/consent/parts.py). Grants for Consents stored
-- before this migration appear when each Consent is next written; until then the configured
-- defaults apply to those people (so partners other than NHS direct care see nothing: safe).
UPDATE resource r SET patient_id = r.res_id WHERE r.res_type = 'Patient';
UPDATE resource r SET patient_id = (
    SELECT i.target_id FROM idx_reference i
    WHERE i.res_type = r.res_type AND i.res_id = r.res_id AND i.target_type = 'Patient'
      AND i.param IN ('patient', 'subject', 'beneficiary')
    ORDER BY i.param <> 'patient', i.param <> 'subject' LIMIT 1)
WHERE r.res_type <> 'Patient';
UPDATE resource r SET part = CASE
    WHEN r.res_type = 'Patient' THEN 'demographics'
    WHEN r.res_type = 'RelatedPerson' THEN 'carers'
    WHEN r.res_type = 'CareTeam' THEN 'care-team'
    WHEN r.res_type = 'Goal' THEN 'care-support-plan'
    WHEN r.res_type = 'Flag' THEN 'demographics'
    WHEN r.res_type = 'CarePlan' AND r.content::text LIKE '%budget-statement%' THEN 'budget'
    WHEN r.res_type = 'CarePlan' AND r.content::text LIKE '%care-support-plan%' THEN 'care-support-plan'
    WHEN r.res_type = 'Consent' AND r.content::text LIKE '%record-sharing%' THEN 'consent'
    ELSE 'health' END
WHERE r.patient_id IS NOT NULL;
UPDATE resource_version v SET patient_id = r.patient_id, part = r.part
FROM resource r WHERE r.res_type = v.res_type AND r.res_id = v.res_id AND r.patient_id IS NOT NULL;
