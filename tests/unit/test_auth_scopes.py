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


def test_patient_context_scopes_are_not_offered():
    with pytest.raises(ScopeError):
        parse_scope("patient/Goal.rs")
