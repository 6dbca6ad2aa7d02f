"""Direct payment and support service statements, and providers' invoices → spend lines
(ChargeItem, profile `ipc-spend-line`), pure. `MAPPINGS` registers `statement-line` (one line per
envelope, from connectors/statements). Ids come from `hub.fhir.ids.source_id` with the provider
(`stmt-<Provider_Code>`) as source and its line reference, so a line sent again in a later
statement lands on the same resource (the same content writes nothing; a corrected one is its
next version)."""
from mappings.statements.lines import map_line

MAPPINGS = {"statement-line": map_line}

__all__ = ["MAPPINGS", "map_line"]
