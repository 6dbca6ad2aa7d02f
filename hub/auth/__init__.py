"""OAuth2 and SMART on FHIR: who is calling (a Principal) and what their token lets them do."""
