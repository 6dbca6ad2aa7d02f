-- Event numbers are given when an event is first judged for its subscriber, not when it
-- matches (issue 15): a matched event waits in `subscription_event` in the order it matched
-- (`seq`); when the notifier (or `$events`) comes to it, the subscriber's access decides, and
-- only an event the subscriber may read takes the next number (events-since-subscription-start).
-- A withheld event keeps no number, so a gap in a receiver's numbers means a real loss, never
-- something hidden from it.
ALTER TABLE subscription ADD COLUMN matched bigint NOT NULL DEFAULT 0;  -- events queued (the last seq)
ALTER TABLE subscription ADD COLUMN judged bigint NOT NULL DEFAULT 0;   -- queued events judged so far
UPDATE subscription SET matched = events_since_start, judged = events_since_start;

ALTER TABLE subscription_event ADD COLUMN seq bigint;
UPDATE subscription_event SET seq = event_number;
ALTER TABLE subscription_event ALTER COLUMN seq SET NOT NULL;
ALTER TABLE subscription_event DROP CONSTRAINT subscription_event_pkey;
ALTER TABLE subscription_event ADD PRIMARY KEY (subscription_id, seq);
ALTER TABLE subscription_event ALTER COLUMN event_number DROP NOT NULL;
ALTER TABLE subscription_event ADD COLUMN withheld boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX subscription_event_number ON subscription_event (subscription_id, event_number)
    WHERE event_number IS NOT NULL;
