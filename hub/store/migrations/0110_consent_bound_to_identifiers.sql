-- Issue 20: a consent grant binds to the organisation identity recorded in it (identifier
-- system and value), never to an Organization resource someone could later edit. The grant's
-- organisation is resolved once, when the Consent is written (hub/consent/grants.py): a literal
-- reference to an Organization becomes one row per identifier that Organization carries at that
-- moment; an Organization with no identifier grants nothing (no row); a provision naming no
-- organisation names the whole partner class (org_system and org_code both NULL).

ALTER TABLE consent_grant ADD COLUMN org_system text;

-- Grants written before this migration named an Organization by id: they are bound now to the
-- identifiers that Organization carries today (the best evidence of whom the person named).
INSERT INTO consent_grant (consent_id, patient_id, role, org_id, org_code, org_system, part, permit)
SELECT DISTINCT g.consent_id, g.patient_id, g.role, NULL, t.code, t.system, g.part, g.permit
FROM consent_grant g
JOIN idx_token t ON t.res_type = 'Organization' AND t.res_id = g.org_id AND t.param = 'identifier'
WHERE g.org_id IS NOT NULL AND t.code IS NOT NULL AND t.system IS NOT NULL;
-- ...and the Organization-by-id rows go: one with no identifier (or the marker of an
-- organisation that could not be resolved) granted, and now grants, nobody.
DELETE FROM consent_grant WHERE org_id IS NOT NULL;
-- An identifier named without its system cannot be told apart from another organisation's
-- code in another scheme: it grants nobody.
DELETE FROM consent_grant WHERE org_code IS NOT NULL AND org_system IS NULL;
ALTER TABLE consent_grant DROP COLUMN org_id;

-- The rule (hub/search/access.py says why), with a grant matching the caller when its role is
-- one of the caller's and it names the whole class or exactly the caller's organisation
-- identifier (system and value).
CREATE OR REPLACE FUNCTION consent_visible(p_patient text, p_part text, p_roles text[], p_org text,
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
       AND ((g.org_code IS NULL AND g.org_system IS NULL)
            OR (g.org_code = p_org AND g.org_system = p_org_system));
    IF denied THEN
        RETURN false;
    END IF;
    RETURN permitted OR (NOT named AND p_part = ANY (p_defaults));
END
$$;
