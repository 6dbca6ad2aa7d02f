"""The life of a personalised care and support plan: agreement, IPC stages, reviews, what the hub
does when a plan changes, and outcome measures. Pure rules on FHIR JSON (imports only
`hub.fhir`): the store applies them on every write (hub.store.plans), the plan worker
(hub.pipeline.planlife) acts on them, the pages read them. See README.md."""
