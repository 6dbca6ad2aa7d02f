"""MOD transition handover → FHIR R4: `map_handover(bytes, source) -> dict` (a transaction
Bundle), pure. `MAPPINGS` registers the kind the MOD connector publishes (`mod-handover`)."""
from mappings.mod.handover import map_handover

MAPPINGS = {"mod-handover": map_handover}

__all__ = ["MAPPINGS", "map_handover"]
