"""HL7 v2 ADT → FHIR R4: `map_message(bytes) -> dict` (a transaction Bundle), pure."""
from mappings.hl7v2.adt import MappingError, map_message, resource_id, source_system
from mappings.hl7v2.er7 import Er7Error, Message, Segment, parse

__all__ = ["Er7Error", "MappingError", "Message", "Segment", "map_message", "parse", "resource_id",
           "source_system"]
