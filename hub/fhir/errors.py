"""Errors as values: one exception type carrying a FHIR issue code, turned into an
OperationOutcome and an HTTP status only at the edge (the API, a worker's dead letter)."""
from __future__ import annotations

from typing import Any

# The HTTP status that goes with each FHIR issue type (http://hl7.org/fhir/valueset-issue-type.html)
# when the issue is the reason a request failed.
_STATUS_BY_CODE = {
    "invalid": 400,
    "structure": 400,
    "required": 400,
    "value": 400,
    "invariant": 422,
    "processing": 422,
    "business-rule": 422,
    "security": 403,
    "login": 401,
    "forbidden": 403,
    "not-found": 404,
    "deleted": 410,
    "not-supported": 400,
    "conflict": 409,
    "duplicate": 409,
    "multiple-matches": 412,
    "too-costly": 413,
    "too-long": 413,
    "throttled": 429,
    "exception": 500,
    "timeout": 504,
    "transient": 503,
    "incomplete": 400,
    "code-invalid": 422,
    "extension": 400,
    "lock-error": 409,
    "no-store": 500,
    "informational": 200,
}


class Issue:
    """One OperationOutcome.issue: what went wrong, where (FHIRPath), how badly."""

    __slots__ = ("code", "diagnostics", "expression", "severity")

    def __init__(
        self,
        code: str,
        diagnostics: str,
        expression: str | None = None,
        severity: str = "error",
    ) -> None:
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression
        self.severity = severity

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class FhirError(Exception):
    """A request the hub refuses, with the FHIR issue code(s) that say why.

    `status` defaults from the first issue's code; pass it where the interaction decides
    otherwise (405 for a method not allowed, 412 for a failed precondition, 415, ...).
    """

    def __init__(
        self,
        code: str,
        diagnostics: str,
        *,
        status: int | None = None,
        expression: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.issues = issues or [Issue(code, diagnostics, expression)]
        self.status = status or _STATUS_BY_CODE.get(self.issues[0].code, 400)
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return self.issues[0].code

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def not_found(res_type: str, res_id: str) -> FhirError:
    return FhirError("not-found", f"{res_type}/{res_id} is not known to the hub")


def gone(res_type: str, res_id: str, version: int) -> FhirError:
    return FhirError(
        "deleted",
        f"{res_type}/{res_id} was deleted (version {version})",
        headers={"ETag": f'W/"{version}"'},
    )
