"""What every workspace page's template is given: who is signed in, their role's name, the CSRF
token for its forms, and which area of the header is current."""
from __future__ import annotations

from typing import Any

from hub.auth.roles import ROLE_NAMES
from hub.web.access import Workspace


def page_context(workspace: Workspace, area: str, title: str, **extra: Any) -> dict[str, Any]:
    user = workspace.user
    return {"me": user, "role_name": ROLE_NAMES.get(user.role, user.role), "csrf": workspace.csrf,
            "area": area, "title": title, **extra}
