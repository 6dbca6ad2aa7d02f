-- `phonetic` is now indexed as the Metaphone key of each name part (hub.search.values.phonetic_keys)
-- instead of the plain normalised name. The old rows cannot be turned into keys in SQL: they are
-- removed here, and the API writes the new ones at start-up for every resource that has none
-- (hub.store.index.backfill, idempotent).
DELETE FROM idx_string WHERE param = 'phonetic';
