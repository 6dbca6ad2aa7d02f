-- Linked, de-identified datasets for commissioners (Group/[id]/$linked-dataset).
-- One secret key per recipient (the client that asks): the pseudonyms in its files are a keyed
-- hash under its own key, so two recipients cannot join their files on the pseudonym. The key
-- never leaves the hub; deleting a recipient's row makes every pseudonym it held unlinkable.
CREATE TABLE dataset_recipient_key (
    recipient text        PRIMARY KEY,   -- the client id the dataset was released to
    key       bytea       NOT NULL,      -- 32 random bytes
    created   timestamptz NOT NULL DEFAULT now()
);

-- What left, for whom and why: one row per release, beside the AuditEvent naming each person.
CREATE TABLE dataset_release (
    id             uuid        PRIMARY KEY,
    recipient      text        NOT NULL,
    organisation   text,
    partner_class  text,
    purpose_of_use text,                  -- the token's purposeOfUse
    purpose        text        NOT NULL,  -- the reason given with the request
    cohort         text        NOT NULL,  -- Group/<id> the dataset is about
    people         integer     NOT NULL,  -- rows released
    columns        text[]      NOT NULL,
    suppressed     integer     NOT NULL,  -- values replaced by '*' (small numbers)
    sha256         text        NOT NULL,  -- of the CSV as released
    created        timestamptz NOT NULL
);
CREATE INDEX dataset_release_recipient ON dataset_release (recipient, created);
