"""Local authority social care extracts (CLD-shaped CSV) → FHIR R4 transaction Bundles, pure.

`MAPPINGS` registers the three kinds the LA connector publishes: `la-cld-person` (one person),
`la-cld-carer` (one carer of one person), `la-cld-events` (all of one person's events in a
file). Ids come from `hub.fhir.ids.source_id` with the council (`la-<ONS code>`) as source, so
re-importing an extract lands on the same resources with the same content."""
from mappings.la.events import map_events
from mappings.la.people import map_carer, map_person

MAPPINGS = {"la-cld-person": map_person, "la-cld-carer": map_carer, "la-cld-events": map_events}

__all__ = ["MAPPINGS", "map_carer", "map_events", "map_person"]
