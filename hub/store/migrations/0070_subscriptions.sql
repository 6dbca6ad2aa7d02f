-- Topic-based subscriptions (Subscriptions R5 Backport for R4): who owns each Subscription and
-- how far its delivery has got. The Subscription resource itself is stored like any other
-- resource; this row is the delivery state the hub keeps beside it.
CREATE TABLE subscription (
    id                  text PRIMARY KEY,              -- the Subscription resource's id
    -- The client that created it, as its token said then: delivery reads with this access.
    client_id           text NOT NULL,
    partner_class       text NOT NULL,
    organisation        text NOT NULL,
    organisation_system text NOT NULL,
    scopes              text[] NOT NULL,
    -- topic: a topic-based subscription (R5 Backport), `topic` its canonical; criteria: a classic
    -- R4 rest-hook, `topic` its search criteria (`Type?name=value`).
    kind                text NOT NULL DEFAULT 'topic' CHECK (kind IN ('topic', 'criteria')),
    topic               text NOT NULL,
    filters             jsonb NOT NULL DEFAULT '[]',   -- [[parameter, value], …] from filter-criteria
    endpoint            text NOT NULL,
    headers             text[] NOT NULL DEFAULT '{}',  -- "Name: value", sent with every POST
    payload             text NOT NULL CHECK (payload IN ('empty', 'id-only', 'full-resource')),
    content_type        text NOT NULL DEFAULT 'application/fhir+json',
    heartbeat_s         integer,
    max_count           integer NOT NULL DEFAULT 20,
    status              text NOT NULL CHECK (status IN ('requested', 'active', 'error', 'off')),
    error               text,
    paused              boolean NOT NULL DEFAULT false,
    events_since_start  bigint NOT NULL DEFAULT 0,     -- the last event number given
    delivered_through   bigint NOT NULL DEFAULT 0,     -- every event up to this one is settled
    attempts            integer NOT NULL DEFAULT 0,    -- failed tries of the current notification
    first_failure_at    timestamptz,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    last_sent_at        timestamptz,
    delivered_count     bigint NOT NULL DEFAULT 0,
    withheld_count      bigint NOT NULL DEFAULT 0,
    retried_count       bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_topic ON subscription (topic) WHERE status IN ('requested', 'active');

-- Each change event a subscription's topic and filters matched, numbered per subscription in
-- the order they were matched (events-since-subscription-start). `source` is the change event's
-- place on the bus, so a redelivered change event is never numbered twice.
CREATE TABLE subscription_event (
    subscription_id text        NOT NULL REFERENCES subscription (id) ON DELETE CASCADE,
    event_number    bigint      NOT NULL,
    res_type        text        NOT NULL,
    res_id          text        NOT NULL,
    version         integer     NOT NULL,
    method          text        NOT NULL,
    patient_id      text,
    part            text,
    source          text        NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, event_number),
    UNIQUE (subscription_id, source)
);
