"""Who is asking, as the store needs to know it, and the SQL that keeps each query to what
they may see. Every store function that reads or writes the record takes an `Access`, without a
default: a client's (its SMART scopes, partner class, organisation and consent defaults), or
`Access.system()` for the hub's own trusted work (the recorder, loading the guide at start-up, a
hub run with authorisation off to measure what it costs). Forgetting it is a TypeError, never an
unfiltered query. Queries add `visible_sql` to their WHERE clause, so paging, totals, includes
and history are right by construction, never filtered afterwards.

A resource outside every compartment is visible, unless it is tagged with a record part (data
about many people that no one record holds, such as a cohort's member Group): then only to
viewers whose class sees that part by default. A resource in a patient's compartment
(`patient_id` set) is visible when:
  no grant matching the viewer denies its part, and
  (a grant matching the viewer permits its part, or
   no permit for that patient names the viewer at all and its class sees the part by default).
Grants come from the person's active IPC record-sharing Consents (table consent_grant, written
with the Consent). A grant matches the viewer when its role is the viewer's partner class (or
`lead-charity` for a charity) and it names no organisation or names the viewer's: an
Organization whose identifier is the client's organisation code, or that code directly.
So a Consent speaks for the partners it names (base deny: a named partner sees only what is
permitted), and partners it does not name keep their class default (charities: nothing;
NHS direct care: the record). Resources outside every compartment (Organization, Practitioner,
the guide's conformance resources) depend on scopes only.

Before all of that, a resource the hub could not place in one person's record (`owner` set:
hub/consent/placement.py) is visible only to the organisation that wrote it, named by its
identifier (`system|value`, the viewer's `owner_key`).

A person signed in themselves (a SMART patient launch: `Access.patient` set) is not a partner:
consent grants and class defaults do not apply to them. They see their own record (the rows of
their compartment) except the parts withheld from the person (`WITHHELD_FROM_PERSON`: a
safeguarding enquiry may be about someone close to them), and resources outside every record
that no part tags; never another person's. A proxy (a RelatedPerson acting for them,
`Access.proxy`) sees in that record only the parts an active delegation Consent allows, inside
its period and, for a parent's delegation, until the young person comes of age
(`proxy_until_age`): table proxy_delegation (hub/consent/delegation.py), judged in the same
SQL, so expiry and withdrawal apply to the next request."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from psycopg import sql

from hub.fhir.errors import FhirError

_CHARITY_ROLES = ("charity", "lead-charity")
# The guide's conformance resources: readable and searchable with any valid token (they say how
# to talk to the hub, nothing about anyone).
CONFORMANCE_TYPES = frozenset({
    "StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter",
    "CapabilityStatement", "OperationDefinition", "CompartmentDefinition", "ImplementationGuide",
    "NamingSystem", "StructureMap",
})


# Parts of their own record a person signed in does not see through the hub: a safeguarding
# enquiry may concern someone close to them (their proxy, say), and is shared by the
# professionals leading it (docs/person.md says why and what else is withheld).
WITHHELD_FROM_PERSON = ("safeguarding",)

_LETTER_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_ALL = frozenset("cruds")


@dataclass(frozen=True, slots=True)
class Access:
    """What one caller may do (SMART scopes) and see (consent) — travels with every request to
    every store function. Immutable, so the API keeps one per access token."""

    partner_class: str
    org_code: str
    org_system: str | None
    default_parts: tuple[str, ...]
    # Resource type (or "*") → SMART interaction letters (c r u d s), from the token's scopes.
    scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    # The hub's own work: every interaction allowed, nothing filtered. Only `system()` sets it.
    trusted: bool = False
    # Who is asking, for what a write leaves behind (a consent change's audit row) and for the
    # consent authority (hub/consent/authority.py): the client, the signed-in person an app
    # acts for (`Practitioner/1`, and once people sign in themselves `Patient/1` or
    # `RelatedPerson/1`) and their staff role, and whether that role (with the partner class)
    # is one the operator authorised to record consent (HUB_CONSENT_RECORDERS).
    client_id: str | None = None
    user: str | None = None
    user_role: str | None = None
    records_consent: bool = False
    # A person's own app (SMART patient launch): the Patient whose record the token opens. Set,
    # the consent rules give way to the compartment rule (module docstring). `proxy`: the
    # RelatedPerson id when someone acting for the person signed in; `proxy_until_age` the age
    # at which a parent's delegation passes to the young person (HUB_PROXY_PASSES_AT_AGE).
    patient: str | None = None
    proxy: str | None = None
    proxy_until_age: int = 16
    # visible_sql's answer per table alias, made once: the API keeps one Access per token.
    predicates: dict[str, tuple[str, tuple[object, ...]]] = field(default_factory=dict, compare=False,
                                                                  repr=False)

    @staticmethod
    def system() -> Access:
        """The hub acting for itself (the recorder, start-up loading, authorisation switched
        off): sees and may do everything. Spelled out at each call site that needs it."""
        return _SYSTEM

    @property
    def owner_key(self) -> str:
        """How this caller's organisation is written in `owner` (what it wrote and the hub could
        not place): `system|value`; `hub` for the hub's own work."""
        return "hub" if self.trusted else f"{self.org_system or ''}|{self.org_code}"

    @property
    def roles(self) -> list[str]:
        return list(_CHARITY_ROLES) if self.partner_class == "charity" else [self.partner_class]

    def permits(self, res_type: str, letter: str) -> bool:
        """Whether the token's scopes allow `letter` (c r u d s) on `res_type`."""
        if self.trusted or (letter in "rs" and res_type in CONFORMANCE_TYPES):
            return True
        return letter in self.scopes.get(res_type, ()) or letter in self.scopes.get("*", ())

    def require(self, res_type: str, letters: str) -> None:
        """403 `forbidden` unless the scopes allow every one of `letters` on `res_type`."""
        if self.trusted:
            return
        for letter in letters:
            if not self.permits(res_type, letter):
                raise forbidden(res_type, letter)

    def require_either(self, res_type: str, letters: str) -> None:
        """403 `forbidden` unless the scopes allow at least one of `letters` on `res_type`."""
        if not any(self.permits(res_type, letter) for letter in letters):
            raise forbidden(res_type, letters[0])

    def types_with(self, letter: str, candidates: list[str] | tuple[str, ...]) -> list[str] | None:
        """The candidates allowed `letter`; None when every type is (no filter needed)."""
        if self.trusted or letter in self.scopes.get("*", ()):
            return None
        return [t for t in candidates if self.permits(t, letter)]


_SYSTEM = Access(partner_class="system", org_code="", org_system=None, default_parts=(),
                 scopes={"*": _ALL}, trusted=True)


def forbidden(res_type: str, letter: str) -> FhirError:
    return FhirError("forbidden", f"the access token's scopes do not allow {_LETTER_NAMES[letter]} "
                     f"on {res_type} (needs system/{res_type}.{letter})", status=403)


def visible_sql(access: Access, alias: str) -> tuple[str, list[object]] | None:
    """A boolean SQL expression (and its parameters): may `access` see the row `alias`, which
    has `patient_id` and `part` columns? None for trusted access (no filter). The rule itself is
    the database function consent_visible (migration 0004), called only for rows in someone's
    record that the inline fast path (no grants for that person, a default part) does not
    already admit."""
    if access.trusted:
        return None
    known = access.predicates.get(alias)
    if known is None:
        known = access.predicates[alias] = _visible_sql(access, alias)
    return known[0], list(known[1])


def _visible_sql(viewer: Access, alias: str) -> tuple[str, tuple[object, ...]]:
    if viewer.patient is not None:
        return _compartment_sql(viewer, alias)
    # The common case first, inline: a person with no consent grants at all and a part the
    # viewer's class sees by default (one index probe, no function call).
    values = (_array(viewer.default_parts), _array(tuple(viewer.roles)), viewer.org_code,
              viewer.org_system, viewer.owner_key)
    if any(v is not None and "\x00" in v for v in values):  # no SQL literal can hold it: bind
        owner, defaults, roles, org, org_system = ("%s::text", "%s::text[]", "%s::text[]", "%s::text", "%s::text")
        params: tuple[object, ...] = (values[4], values[0], values[0], values[1], values[2], values[3], values[0])
    else:
        # The viewer's values go into the text as literals: the API keeps one Access per token,
        # so this text is built once, and each query then binds (and the server parses) six
        # parameters fewer; the statement is still prepared once per connection and viewer.
        defaults, roles, org, org_system = (_literal(values[0]) + "::text[]", _literal(values[1]) + "::text[]",
                                            _literal(values[2]) + "::text", _literal(values[3]) + "::text")
        owner = _literal(values[4]) + "::text"
        params = ()
    # Outside every record (patient_id NULL): visible unless tagged with a part (a cohort's
    # member Group), then only to classes that see that part by default, or to the organisation
    # that holds it apart (its owner). In a record: the owner rule, then consent.
    text = (f"(({alias}.owner IS NULL OR {alias}.owner = {owner}) AND ("
            f"({alias}.patient_id IS NULL AND ({alias}.part IS NULL OR {alias}.owner IS NOT NULL "
            f"OR {alias}.part = ANY({defaults}))) OR "
            f"({alias}.patient_id IS NOT NULL AND (({alias}.part = ANY({defaults}) AND NOT EXISTS ("
            f"SELECT 1 FROM consent_grant g WHERE g.patient_id = {alias}.patient_id)) OR "
            f"consent_visible({alias}.patient_id, {alias}.part, {roles}, {org}, {org_system}, {defaults})))))")
    return text, params


def _compartment_sql(viewer: Access, alias: str) -> tuple[str, tuple[object, ...]]:
    """A person (or their proxy) signed in: their own record and nothing of anyone else's. Values
    are bound, not inlined: a person's app makes few requests, and the ids come from the token."""
    outside = f"({alias}.patient_id IS NULL AND {alias}.part IS NULL AND {alias}.owner IS NULL)"
    own = f"({alias}.owner IS NULL OR {alias}.owner = %s::text)"
    if viewer.proxy is None:
        text = (f"({own} AND ({outside} OR ({alias}.patient_id = %s::text "
                f"AND NOT ({alias}.part = ANY(%s::text[])))))")
        return text, (viewer.owner_key, viewer.patient, list(WITHHELD_FROM_PERSON))
    delegated = (f"EXISTS (SELECT 1 FROM proxy_delegation d WHERE d.related_person_id = %s::text "
                 f"AND d.patient_id = {alias}.patient_id AND {alias}.part = ANY(d.parts) "
                 f"AND (d.period_start IS NULL OR d.period_start <= now()) "
                 f"AND (d.period_end IS NULL OR d.period_end > now()) "
                 f"AND (d.child_birth_date IS NULL OR "
                 f"(d.child_birth_date + make_interval(years => %s::int)) > current_date))")
    text = (f"({own} AND ({outside} OR ({alias}.patient_id = %s::text "
            f"AND NOT ({alias}.part = ANY(%s::text[])) AND {delegated})))")
    return text, (viewer.owner_key, viewer.patient, list(WITHHELD_FROM_PERSON), viewer.proxy,
                  viewer.proxy_until_age)


def _literal(value: str | None) -> str:
    """An SQL literal quoted by psycopg itself (never by hand), with `%` doubled because the text
    then goes through psycopg's placeholder parsing."""
    return sql.Literal(value).as_string().replace("%", "%%")


@lru_cache(maxsize=64)
def _array(values: tuple[str, ...]) -> str:
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
