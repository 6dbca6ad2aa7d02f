-- Staff sign-in: users, the SMART authorization code grant (codes and rotated refresh tokens),
-- browser sessions, and apps that act for a signed-in user.

-- People who sign in. Each is a Practitioner with one PractitionerRole in the record (ids kept
-- here); their organisation and partner class decide what consent lets them see, exactly as for
-- that class's clients. A local account has an argon2 password hash (and optionally a TOTP
-- secret); an account that signs in through the external OpenID Connect provider has the value
-- of the mapped claim instead (external_subject) and no password.
CREATE TABLE hub_user (
    user_id             text PRIMARY KEY,
    username            text NOT NULL UNIQUE,
    display_name        text NOT NULL,
    role                text NOT NULL
        CHECK (role IN ('coordinator', 'commissioner', 'clinician', 'operator')),
    organisation        text NOT NULL,
    organisation_system text NOT NULL,
    partner_class       text NOT NULL
        CHECK (partner_class IN ('nhs', 'local-authority', 'defence', 'charity', 'education')),
    practitioner_id     text NOT NULL UNIQUE,
    practitioner_role_id text NOT NULL UNIQUE,
    password_hash       text,
    totp_secret         text,
    external_subject    text UNIQUE,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    failed_attempts     integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at     timestamptz,
    CHECK (password_hash IS NOT NULL OR external_subject IS NOT NULL)
);

-- Apps used by people (SMART App Launch): their exact redirect URIs, and public clients (no
-- secret: PKCE alone protects the code) besides the confidential ones.
ALTER TABLE oauth_client ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}';
ALTER TABLE oauth_client DROP CONSTRAINT oauth_client_auth_method_check;
ALTER TABLE oauth_client ADD CONSTRAINT oauth_client_auth_method_check
    CHECK (auth_method IN ('client_secret_basic', 'private_key_jwt', 'none'));

-- Authorization codes, kept only as a SHA-256 of the code. Single use: used_at is set by the
-- exchange (in one UPDATE … WHERE used_at IS NULL), and a second use revokes every token the
-- first one gave (its grant family).
CREATE TABLE oauth_code (
    code_hash       text PRIMARY KEY,
    client_id       text NOT NULL,
    user_id         text NOT NULL REFERENCES hub_user (user_id),
    redirect_uri    text NOT NULL,
    scope           text NOT NULL,
    code_challenge  text NOT NULL,
    challenge_method text NOT NULL CHECK (challenge_method = 'S256'),
    nonce           text,
    auth_time       bigint NOT NULL,
    family_id       text NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX oauth_code_expiry ON oauth_code (expires_at);

-- Refresh tokens (SHA-256 only), rotated at each use: the used one is marked and a new one of
-- the same family issued. A used token presented again means it leaked: the whole family is
-- revoked, refresh tokens and the access tokens issued with them (their jti go to
-- oauth_revoked_token, so every API process refuses them at once).
CREATE TABLE oauth_refresh_token (
    token_hash      text PRIMARY KEY,
    family_id       text NOT NULL,
    client_id       text NOT NULL,
    user_id         text NOT NULL REFERENCES hub_user (user_id),
    scope           text NOT NULL,
    access_jti      text NOT NULL,
    access_expires_at timestamptz NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX oauth_refresh_token_family ON oauth_refresh_token (family_id);
CREATE INDEX oauth_refresh_token_expiry ON oauth_refresh_token (expires_at);

-- Browser sessions (SHA-256 of the cookie value only). `sign-in` sessions are the
-- authorisation server's (who is signed in at /auth); `workspace` sessions are the web
-- workspace's, holding the tokens it was given for its user. Both end at sign-out, after
-- idle_timeout without a request, or at absolute expiry.
CREATE TABLE browser_session (
    session_hash    text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('sign-in', 'workspace')),
    user_id         text NOT NULL REFERENCES hub_user (user_id),
    csrf_token      text NOT NULL,
    auth_time       bigint NOT NULL,
    access_token    text,
    refresh_token   text,
    access_expires_at bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX browser_session_user ON browser_session (user_id);

-- Who a request acted for, besides the app: the Practitioner of a signed-in user.
ALTER TABLE audit_event ADD COLUMN user_ref text;
CREATE INDEX audit_event_user ON audit_event (user_ref, recorded) WHERE user_ref IS NOT NULL;
