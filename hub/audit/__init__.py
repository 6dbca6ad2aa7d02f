"""Audit: who read, searched or wrote which person's record, kept so the person can be told.

`record` turns one finished request into a compact AuditRecord (pure), `events` renders records
as FHIR R4 AuditEvent resources (pure), `writer` hands records to storage off the request path."""
