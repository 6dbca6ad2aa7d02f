"""Bulk Data export (FHIR Bulk Data Access 2.0.0): the kick-off read and checked (`kickoff`),
the runner that writes NDJSON files under the caller's access (`runner`), and what the status and
file URLs answer (`status`). The `$export` operation itself is in hub/interactions/operations."""
