"""Who may record a person's record-sharing consent, and on what authority.

A Consent decides who sees a person's record, so writing one is not a matter of scopes: a
partner that could write one could grant itself the record, or lock the NHS out of it. Only
these may create, change, withdraw or delete a person's IPC record-sharing Consent:

- `person`: the person themselves — a caller signed in as that Patient (`Access.user` is
  `Patient/<id>`, as a patient-facing app's token will name them once people sign in: issue 18);
- `proxy`: someone entitled to decide for them — a caller signed in as a RelatedPerson whose
  `patient` is that person and whose relationship is one that carries the authority to decide
  (power of attorney, health care power of attorney, guardian, parent of a child: `PROXY_ROLES`),
  active and, if it has a period, within it;
- `authorised-role`: a member of staff in a role the operator authorised to record consent
  for their partner class (`HUB_CONSENT_RECORDERS`, default `nhs:coordinator,
  local-authority:coordinator`: the named coordinator, after a conversation with the person),
  and the Consent itself records that conversation: `verification` with `verified: true`,
  `verifiedWith` the person (or a RelatedPerson) and the `verificationDate`;
- `feed`: the hub's recorder writing what a feed carries — only the MOD transition handover
  maps a consent (its consent section, recorded by the Veterans Welfare Manager with the service
  leaver); a partner's FHIR feed carrying a Consent is refused by its mapping
  (mappings/fhir_bundle). The Provenance written with the version names the feed.

Backend clients (a charity's, a council's system) act for an organisation and no person: they
never record consent, whatever their scopes. Every change made on one of these authorities is
audited with who made it and the authority (hub.store.audit.record_consent_change)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.consent.defaults import ConsentConfigError
from hub.consent.delegation import is_delegation
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.search.access import Access

PERSON = "person"
PROXY = "proxy"
AUTHORISED_ROLE = "authorised-role"
FEED = "feed"
# AuditEvent.agent.policy: the authority a consent change was recorded on.
POLICY_BASE = f"{CANONICAL_BASE}/consent-authority#"
BUILT_IN_RECORDERS = "nhs:coordinator,local-authority:coordinator"
_STAFF_ROLES = ("coordinator", "commissioner", "clinician", "operator")
_CLASSES = ("nhs", "local-authority", "defence", "charity", "education")

_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
# RelatedPerson relationships that carry the authority to decide for the person.
PROXY_ROLES = frozenset({(_ROLE_CODE, "POWATT"), (_ROLE_CODE, "HPOWATT"), (_ROLE_CODE, "DPOWATT"),
                         (_ROLE_CODE, "SPOWATT"), (_ROLE_CODE, "GUARD"), (_ROLE_CODE, "PRN"),
                         (_ROLE_CODE, "MTH"), (_ROLE_CODE, "FTH")})


@dataclass(frozen=True, slots=True)
class Authority:
    """On what authority a consent change was made, and by whom."""

    code: str  # person, proxy, authorised-role, feed
    who: str | None  # Patient/1, RelatedPerson/2, Practitioner/3; None for the hub and feeds

    @property
    def policy(self) -> str:
        return POLICY_BASE + self.code


def parse_recorders(text: str | None) -> frozenset[tuple[str, str]]:
    """HUB_CONSENT_RECORDERS: `class:role` pairs, comma-separated (an empty value: nobody but
    the person and their proxy). An unknown class or role stops the hub at start-up."""
    text = BUILT_IN_RECORDERS if text is None else text
    found = set()
    for item in filter(None, (i.strip() for i in text.split(","))):
        cls, sep, role = item.partition(":")
        if not sep or cls.strip() not in _CLASSES or role.strip() not in _STAFF_ROLES:
            raise ConsentConfigError(f"HUB_CONSENT_RECORDERS: {item!r} is not partner-class:role "
                                     f"(classes: {', '.join(_CLASSES)}; roles: {', '.join(_STAFF_ROLES)})")
        found.add((cls.strip(), role.strip()))
    return frozenset(found)


def forbidden() -> FhirError:
    return FhirError("forbidden", "only the person, someone entitled to decide for them, or a member of staff in a "
                     "role the operator authorises (after a recorded conversation with the person) may record "
                     "or change a person's record-sharing consent", status=403)


async def authorise(conn: AsyncConnection, access: Access, patient_ids: set[str],
                    new: dict[str, Any] | None) -> Authority:
    """The authority `access` has to record (or, `new` None, delete) the record-sharing consent
    of the people in `patient_ids` (the Consent's patient before and after); 403 if none."""
    if access.trusted:
        return Authority(FEED, None)  # only the recorder writes a Consent with the hub's own access
    user = access.user or ""
    kind, _, user_id = user.partition("/")
    if kind == "Patient" and patient_ids == {user_id}:
        return Authority(PERSON, user)
    if kind == "RelatedPerson" and is_delegation(new):
        raise forbidden()  # nobody widens or extends their own authority to act for the person
    if kind == "RelatedPerson" and len(patient_ids) == 1 and await _is_proxy(conn, user_id, next(iter(patient_ids))):
        return Authority(PROXY, user)
    if kind == "Practitioner" and access.records_consent:
        if new is None or _conversation_recorded(new, patient_ids):
            return Authority(AUTHORISED_ROLE, user)
        raise FhirError("business-rule", "a record-sharing consent recorded by staff must record the conversation it "
                        "comes from: Consent.verification with verified true, verifiedWith the person (or someone "
                        "deciding for them) and the verificationDate", expression="Consent.verification", status=422)
    raise forbidden()


def _conversation_recorded(consent: dict[str, Any], patient_ids: set[str]) -> bool:
    for check in consent.get("verification") or ():
        if not isinstance(check, dict) or check.get("verified") is not True or not check.get("verificationDate"):
            continue
        who = (check.get("verifiedWith") or {}).get("reference") if isinstance(check.get("verifiedWith"), dict) else None
        if isinstance(who, str) and (who in {f"Patient/{p}" for p in patient_ids} or who.startswith("RelatedPerson/")):
            return True
    return False


async def _is_proxy(conn: AsyncConnection, related_id: str, patient_id: str) -> bool:
    cur = await conn.execute("SELECT content::text FROM resource WHERE res_type = 'RelatedPerson' AND res_id = %s "
                             "AND NOT deleted", (related_id,))
    row = await cur.fetchone()
    if row is None:
        return False
    related = jsontext.loads(row[0])
    if related.get("active") is False or (related.get("patient") or {}).get("reference") != f"Patient/{patient_id}":
        return False
    period = related.get("period") or {}
    now = datetime.now(UTC).isoformat()
    if (period.get("start") and period["start"] > now) or (period.get("end") and period["end"] < now[:len(period["end"])]):
        return False
    codes = {(c.get("system"), c.get("code")) for concept in related.get("relationship") or () if isinstance(concept, dict)
             for c in concept.get("coding") or () if isinstance(c, dict)}
    return bool(codes & PROXY_ROLES)
