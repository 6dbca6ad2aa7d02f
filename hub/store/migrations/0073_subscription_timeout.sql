-- A subscription's own `backport-timeout` (seconds the hub waits for its endpoint before a
-- notification attempt counts as failed); NULL: the hub-wide HUB_SUBSCRIPTION_TIMEOUT_S.
ALTER TABLE subscription ADD COLUMN timeout_s integer;
