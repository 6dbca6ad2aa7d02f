"""Which scopes a token is granted: the request cut down, by permission, to what the client may have."""
from __future__ import annotations

import pytest

from hub.auth.principal import ScopeError, parse_scope
from hub.auth.scopes import grant_scopes


@pytest.mark.parametrize(("requested", "allowed", "granted"), [
    ("system/CarePlan.rs", ["system/*.cruds"], ["system/CarePlan.rs"]),
    ("system/*.read", ["system/CarePlan.rs", "system/Goal.crus"], ["system/CarePlan.rs", "system/Goal.rs"]),
    ("system/*.cruds system/Observation.rs", ["system/CarePlan.rs", "system/Goal.crus"],
     ["system/CarePlan.rs", "system/Goal.crus"]),
    ("system/Goal.cruds", ["system/Goal.crus"], ["system/Goal.crus"]),
    ("system/Patient.r", ["system/CarePlan.rs"], []),
    ("system/CarePlan.d", ["system/CarePlan.crus"], []),
    ("system/*.rs", ["system/*.rs", "system/Goal.c"], ["system/*.rs"]),
    ("system/Goal.write", ["system/*.cruds"], ["system/Goal.cud"]),
])
def test_granted_is_requested_intersected_with_allowed(requested, allowed, granted):
    assert grant_scopes(requested, allowed) == granted


def test_nothing_requested_grants_all_allowed_in_v2_syntax():
    assert grant_scopes(None, ["system/Goal.read", "system/CarePlan.rs"]) == ["system/CarePlan.rs", "system/Goal.rs"]
    assert grant_scopes("  ", ["system/*.cruds"]) == ["system/*.cruds"]


@pytest.mark.parametrize("requested", ["patient/Goal.rs", "user/*.read", "system/Goal.sr", "system/Goal.x",
                                       "system/goal.rs", "openid", "system/Goal", "launch/patient"])
def test_malformed_or_non_system_scopes_are_left_out(requested):
    assert grant_scopes(requested, ["system/*.cruds"]) == []
    assert grant_scopes(f"{requested} system/Goal.rs", ["system/*.cruds"]) == ["system/Goal.rs"]


def test_user_scopes_are_granted_in_their_own_context():
    allowed = ["user/*.cruds", "system/*.rs", "openid"]
    assert grant_scopes("launch/patient user/*.* patient/*.read openid profile", allowed,
                        context="user") == ["user/*.cruds"]
    assert grant_scopes("user/*.* system/Goal.rs", allowed) == ["system/Goal.rs"]


def test_patient_context_scopes_parse_but_only_a_citizen_gets_them():
    """Issue 18: `patient/` scopes go to a person's own app, never to staff; `user/` never to a
    citizen; `launch/patient` only to a citizen whose app registered and asked for it."""
    from hub.auth.user_grants import user_scope

    assert parse_scope("patient/Goal.rs") == ("Goal", "rs")
    with pytest.raises(ScopeError):
        parse_scope("practitioner/Goal.rs")
    app = ("openid", "fhirUser", "launch/patient", "patient/*.cruds", "patient/AuditEvent.rs", "user/*.cruds")
    asked = "openid fhirUser launch/patient patient/*.cruds patient/AuditEvent.rs user/*.cruds"
    person = user_scope(asked, app, "person").split()
    assert "launch/patient" in person and "patient/AuditEvent.rs" in person and "patient/*.rs" in person
    assert not any(s.startswith("user/") for s in person) and "patient/*.cruds" not in person
    assert "patient/Goal.u" in person and "patient/Consent.cu" in person and "patient/Task.c" in person
    staff = user_scope(asked, app, "coordinator").split()
    assert not any(s.startswith("patient/") for s in staff) and "launch/patient" not in staff
    assert "user/*.crus" in staff
    unregistered = user_scope(asked, ("openid", "patient/*.rs"), "person").split()
    assert "launch/patient" not in unregistered and unregistered[0] == "patient/*.rs"
