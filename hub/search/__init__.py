"""FHIR R4 search: the parameter definitions (definitions), index rows for a resource
(extract, compiled path walkers in pathwalk, shared value rules in values), query parsing
(parse) and the SQL that runs a parsed search against the idx_* tables (sql)."""
