-- OAuth2 clients of the hub (SMART Backend Services) and what has been revoked.

-- One row per client. A client acts for one organisation (ODS code or charity number, with its
-- identifier system) as one partner class. It authenticates either with a secret, kept only as
-- a salted scrypt hash, or with a signed assertion checked against its registered JWKS.
CREATE TABLE oauth_client (
    client_id           text PRIMARY KEY,
    name                text NOT NULL,
    organisation        text NOT NULL,
    organisation_system text NOT NULL,
    partner_class       text NOT NULL
        CHECK (partner_class IN ('nhs', 'local-authority', 'defence', 'charity', 'education')),
    scopes              text[] NOT NULL,
    auth_method         text NOT NULL CHECK (auth_method IN ('client_secret_basic', 'private_key_jwt')),
    secret_hash         text,
    jwks                jsonb,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    rotated_at          timestamptz,
    revoked_at          timestamptz,
    CHECK ((auth_method = 'client_secret_basic') = (secret_hash IS NOT NULL)),
    CHECK ((auth_method = 'private_key_jwt') = (jwks IS NOT NULL))
);

-- Access tokens revoked before they expire (RFC 7009). Rows past expires_at can be deleted.
CREATE TABLE oauth_revoked_token (
    jti        text PRIMARY KEY,
    client_id  text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_revoked_token_expiry ON oauth_revoked_token (expires_at);

-- Client assertion ids already used (a replayed private_key_jwt assertion is refused), kept
-- until the assertion would have expired anyway.
CREATE TABLE oauth_assertion_jti (
    client_id  text NOT NULL,
    jti        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX oauth_assertion_jti_expiry ON oauth_assertion_jti (expires_at);

-- Least privilege: where the operator made a runtime login role (docker-compose.yml does, as
-- hub_runtime), the API, workers and connectors run as it and may read and write rows, and
-- nothing else: only the migrating role (the owner) changes the schema. Tables later
-- migrations create get the same grants through the default privileges.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_runtime') THEN
        GRANT USAGE ON SCHEMA public TO hub_runtime;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO hub_runtime;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO hub_runtime;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO hub_runtime;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO hub_runtime;
    END IF;
END
$$;
