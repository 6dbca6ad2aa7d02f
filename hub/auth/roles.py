"""What each staff role may do through an app, as SMART `user/` scopes. The role bounds the
scopes; the person's organisation and partner class then bound the data exactly as for that
class's clients (consent is applied in the store), so a coordinator at a charity sees only
what each person shared with that charity.

- coordinator: the single named coordinator (Veterans Welfare Manager, PHB coordinator) keeps
  the plan, goals, tasks and team up to date, and can read who looked at the plans they keep;
- commissioner: reads the record and plans, and agrees budgets (plans and budget statements);
- clinician: reads and writes clinical facts;
- operator: runs the feeds, and decides the demographic review queue (a confirmed duplicate is
  merged: both Patients are updated)."""
from __future__ import annotations

ROLES = ("coordinator", "commissioner", "clinician", "operator")

ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "coordinator": ("user/*.crus", "user/AuditEvent.rs"),
    "commissioner": ("user/*.rs", "user/CarePlan.rus"),
    "clinician": ("user/*.crus",),
    "operator": ("user/Patient.rus", "user/Task.rus", "user/Provenance.rs", "user/AuditEvent.rs"),
}

ROLE_NAMES = {"coordinator": "Care coordinator", "commissioner": "Commissioner",
              "clinician": "Clinician", "operator": "Operator"}
