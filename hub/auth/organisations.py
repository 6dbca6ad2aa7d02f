"""How a client's organisation is named: an ODS code for NHS, local authority, MOD and education
bodies, a Charity Commission number for charities."""
from __future__ import annotations

from hub.fhir.identifiers import CHARITY_NUMBER, ODS_ORGANIZATION_CODE

# Short names the CLI accepts for --organisation-system.
ORGANISATION_SYSTEMS = {"ods": ODS_ORGANIZATION_CODE, "charity-number": CHARITY_NUMBER}


def default_system(partner_class: str) -> str:
    """Charities are named by charity number, every other partner class by ODS code."""
    return CHARITY_NUMBER if partner_class == "charity" else ODS_ORGANIZATION_CODE


def organisation_system(name_or_url: str) -> str:
    """A short name from ORGANISATION_SYSTEMS, or a full system URL as given."""
    return ORGANISATION_SYSTEMS.get(name_or_url, name_or_url)
