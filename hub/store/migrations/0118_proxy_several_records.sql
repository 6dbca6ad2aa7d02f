-- Issue 18, finished: a proxy acting for several people (a parent of two children) signs in once
-- and chooses whose record to open; coordinators link citizen accounts in the workspace.
-- (Numbered in the 0118 block, clear of the other helpers' migrations; depends only on 0100.)

-- The further records a proxy's account may open, beside the one hub_user names (fhir_user,
-- patient_id: the first link, kept there so every earlier reader of hub_user stays right). Each is
-- the RelatedPerson of that person the account acts as; what it may see there is still decided by
-- that person's delegation Consent (proxy_delegation), per person.
CREATE TABLE citizen_link (
    user_id    text NOT NULL REFERENCES hub_user (user_id) ON DELETE CASCADE,
    fhir_user  text NOT NULL,
    patient_id text NOT NULL,
    linked_by  text NOT NULL,           -- who linked it: Practitioner/<id>, or 'ipc-hub users' (the CLI)
    linked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, patient_id)
);

-- The record a sign-in chose at launch (SMART patient selection): one row per token family (every
-- token one sign-in led to), so the code and each rotated refresh token open the same record.
-- Read at the token endpoint, and checked against the account's links each time; removed once
-- none of its family's refresh tokens can be used (hub/store/users.py).
CREATE TABLE launch_context (
    family_id  text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES hub_user (user_id) ON DELETE CASCADE,
    patient_id text NOT NULL,
    fhir_user  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX launch_context_created ON launch_context (created_at);
