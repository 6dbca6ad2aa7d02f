-- The person and their family sign in (issue 18): accounts for citizens beside staff accounts,
-- and the delegations that let a parent, carer or attorney act for someone.

-- A citizen account is the person (`person`, linked to their Patient) or someone acting for them
-- (`proxy`, linked to a RelatedPerson of that Patient). It has no Practitioner: `fhir_user` is the
-- Patient or RelatedPerson it signs in as, and `patient_id` whose record it opens (the SMART
-- launch context `patient`). Citizens belong to no partner organisation (`partner_class`
-- `person`): consent grants never apply to them; their own compartment does (hub/search/access.py).
ALTER TABLE hub_user DROP CONSTRAINT hub_user_role_check;
ALTER TABLE hub_user ADD CONSTRAINT hub_user_role_check
    CHECK (role IN ('coordinator', 'commissioner', 'clinician', 'operator', 'person', 'proxy'));
ALTER TABLE hub_user DROP CONSTRAINT hub_user_partner_class_check;
ALTER TABLE hub_user ADD CONSTRAINT hub_user_partner_class_check
    CHECK (partner_class IN ('nhs', 'local-authority', 'defence', 'charity', 'education', 'person'));
ALTER TABLE hub_user ALTER COLUMN practitioner_id DROP NOT NULL;
ALTER TABLE hub_user ALTER COLUMN practitioner_role_id DROP NOT NULL;
ALTER TABLE hub_user ADD COLUMN fhir_user text;
ALTER TABLE hub_user ADD COLUMN patient_id text;
ALTER TABLE hub_user ADD CONSTRAINT hub_user_citizen_linked CHECK (
    (role IN ('person', 'proxy')) = (fhir_user IS NOT NULL AND patient_id IS NOT NULL AND practitioner_id IS NULL));

-- The person's pages keep their own browser session (kind `person`), beside the workspace's.
ALTER TABLE browser_session DROP CONSTRAINT browser_session_kind_check;
ALTER TABLE browser_session ADD CONSTRAINT browser_session_kind_check
    CHECK (kind IN ('sign-in', 'workspace', 'person'));

-- What each active delegation Consent lets a RelatedPerson see of the person's record: written in
-- the Consent's own transaction (hub/consent/delegation.py), like consent_grant, so a withdrawal
-- applies to the next request. Expiry is judged in the query (period), and so is a child's
-- coming of age: a parent's delegation (child_birth_date set) ends on the day the young person
-- reaches HUB_PROXY_PASSES_AT_AGE.
CREATE TABLE proxy_delegation (
    consent_id        text NOT NULL,
    related_person_id text NOT NULL,
    patient_id        text NOT NULL,
    parts             text[] NOT NULL,
    period_start      timestamptz,
    period_end        timestamptz,
    child_birth_date  date,
    evidence          text
);
CREATE INDEX proxy_delegation_related ON proxy_delegation (related_person_id, patient_id);
CREATE INDEX proxy_delegation_consent ON proxy_delegation (consent_id);
