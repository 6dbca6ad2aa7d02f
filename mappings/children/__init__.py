"""A council's children's extract (connectors/children: SEN2- and CIN/CLA-shaped CSV) → FHIR R4
transaction Bundles, pure.

`children-person` (one child), `children-ehc` (one EHC needs assessment request and the plan it
led to), `children-episode` (one children's social care episode). Ids come from
`hub.fhir.ids.source_id` with the council (`la-<ONS code>`) as source, the same ids the adult
extract gives (a child's council person id is theirs for life), so re-importing lands on the same
resources and the child's record carries on into adult life."""
from mappings.children.ehc import map_ehc
from mappings.children.people import map_child, map_episode

MAPPINGS = {"children-person": map_child, "children-ehc": map_ehc, "children-episode": map_episode}

__all__ = ["MAPPINGS", "map_child", "map_ehc", "map_episode"]
