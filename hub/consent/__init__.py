"""Consent: which parts of a person's record each partner may see.

`parts` places every resource of a patient's compartment in one record part; `grants` turns an
IPC record-sharing Consent into the (role, organisation, part) rows the store keeps beside it;
`defaults` reads what each partner class sees of a person with no consent decision. The store
applies all three inside its SQL (hub/search/access.py), so paging and totals stay right."""
