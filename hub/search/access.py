"""Who is asking, as the store needs to know it, and the SQL that keeps each query to what
they may see. Every store query that returns resources takes a `Viewer` (None: the trusted
pipeline, or a hub run with authorisation off) and adds `visible_sql` to its WHERE clause, so
paging, totals, includes and history are right by construction, never filtered afterwards.

A resource in a patient's compartment (`patient_id` set) is visible when:
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
the guide's conformance resources) depend on scopes only."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

_CHARITY_ROLES = ("charity", "lead-charity")
# The guide's conformance resources: readable and searchable with any valid token (they say how
# to talk to the hub, nothing about anyone).
CONFORMANCE_TYPES = frozenset({
    "StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter",
    "CapabilityStatement", "OperationDefinition", "CompartmentDefinition", "ImplementationGuide",
    "NamingSystem", "StructureMap",
})


@dataclass(frozen=True, slots=True)
class Viewer:
    partner_class: str
    org_code: str
    org_system: str | None
    default_parts: tuple[str, ...]
    # Resource type (or "*") → SMART interaction letters (c r u d s), from the token's scopes.
    scopes: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return list(_CHARITY_ROLES) if self.partner_class == "charity" else [self.partner_class]

    def permits(self, res_type: str, letter: str) -> bool:
        """Whether the token's scopes allow `letter` (c r u d s) on `res_type`."""
        if letter in "rs" and res_type in CONFORMANCE_TYPES:
            return True
        return letter in self.scopes.get(res_type, ()) or letter in self.scopes.get("*", ())

    def types_with(self, letter: str, candidates: list[str] | tuple[str, ...]) -> list[str] | None:
        """The candidates allowed `letter`; None when every type is (no filter needed)."""
        if letter in self.scopes.get("*", ()):
            return None
        return [t for t in candidates if self.permits(t, letter)]


def visible_sql(viewer: Viewer, alias: str) -> tuple[str, list[object]]:
    """A boolean SQL expression (and its parameters): may `viewer` see the row `alias`, which
    has `patient_id` and `part` columns? The rule itself is the database function
    consent_visible (migration 0004), called only for rows in someone's record that the
    inline fast path (no grants for that person, a default part) does not already admit."""
    # The common case first, inline: a person with no consent grants at all and a part the
    # viewer's class sees by default (one index probe, no function call).
    defaults = _array(viewer.default_parts)
    text = (f"({alias}.patient_id IS NULL OR ({alias}.part = ANY(%s::text[]) AND NOT EXISTS ("
            f"SELECT 1 FROM consent_grant g WHERE g.patient_id = {alias}.patient_id)) OR "
            f"consent_visible({alias}.patient_id, {alias}.part, %s::text[], %s::text, %s::text, %s::text[]))")
    # Arrays go as PostgreSQL array literals (text): dumping Python lists costs more than the
    # check itself on the one-row read.
    return text, [defaults, _array(tuple(viewer.roles)), viewer.org_code, viewer.org_system, defaults]


@lru_cache(maxsize=64)
def _array(values: tuple[str, ...]) -> str:
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
