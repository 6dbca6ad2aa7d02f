"""What each staff role may do through an app, as SMART `user/` scopes. The role bounds the
scopes; the person's organisation and partner class then bound the data exactly as for that
class's clients (consent is applied in the store), so a coordinator at a charity sees only
what each person shared with that charity.

- coordinator: the single named coordinator (Veterans Welfare Manager, PHB coordinator) keeps
  the plan, goals, tasks and team up to date, and can read who looked at the plans they keep;
- commissioner: reads the record and plans, and agrees budgets (plans and budget statements);
- clinician: reads and writes clinical facts;
- operator: runs the feeds, and decides the demographic review queue (a confirmed duplicate is
  merged: both Patients are updated).

People sign in too (issue 18), through their own app with `patient/` scopes, limited to one
record (the launch context) and, there, by hub/search/access.py:
- person: the person themselves: reads their record (but what is withheld from them), the
  trail of who looked, adds notes to their goals, changes their sharing choices, asks for a
  review (a Task);
- proxy: a parent, carer or attorney acting for them, with the same scopes but seeing only the
  parts their delegation Consent allows, while it lasts (hub/consent/delegation.py)."""
from __future__ import annotations

ROLES = ("coordinator", "commissioner", "clinician", "operator")
PERSON, PROXY = "person", "proxy"
CITIZEN_ROLES = (PERSON, PROXY)
_CITIZEN_SCOPES = ("patient/*.rs", "patient/AuditEvent.rs", "patient/Goal.u", "patient/Consent.cu",
                   "patient/Task.c")

ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "coordinator": ("user/*.crus", "user/AuditEvent.rs"),
    "commissioner": ("user/*.rs", "user/CarePlan.rus"),
    "clinician": ("user/*.crus",),
    "operator": ("user/Patient.rus", "user/Task.rus", "user/Provenance.rs", "user/AuditEvent.rs"),
    PERSON: _CITIZEN_SCOPES,
    PROXY: _CITIZEN_SCOPES,
}

ROLE_NAMES = {"coordinator": "Care coordinator", "commissioner": "Commissioner",
              "clinician": "Clinician", "operator": "Operator",
              PERSON: "The person", PROXY: "Acting for the person"}
