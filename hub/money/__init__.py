"""The money side of the record: budget statements (indicative and agreed amounts, budget type
from the funding mix), one account per allocation and management option, spend lines and the
balances computed from them, spend running ahead of plan, resource allocation systems
(`$indicative-budget`) and the cost of a person's or a cohort's care by funder and setting.

Pure modules (`statement`, `ledger`, `allocation`, `tariff`) work on FHIR JSON alone; `accounts`
and `costing` read and write the store. Imports: `hub.fhir`, `hub.search`, `hub.store`;
imported by `hub.pipeline` (the recorder), `hub.interactions` (the API's writes and operations)
and `hub.cli`. See README.md."""
