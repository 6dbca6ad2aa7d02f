"""The web: the sign-in pages of the authorisation server and the staff workspace at `/app`.

Pages are server-rendered from the hub's own FHIR API under the signed-in person's access
(hub.web.record), so consent and audit apply to every page exactly as to any app. One route
module per area: signin, person_signin and me (the person's own pages, issue 18), caseload, person,
person_access (the coordinator giving the person and their family sign-in), plan (and signoff: a
commissioner agreeing it), budget, worklist, children (the children's worklist), operations,
commissioning; templates are
named after their page; the NHS design system's stylesheet is vendored in static/nhsuk."""
from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from hub.web import (budget, caseload, children, commissioning, me, operations, person, person_access, person_signin,
                     plan, signin, signoff, worklist)
from hub.web.errors import PageError, SignInRequired
from hub.web.pages import STATIC, render


def install(app: FastAPI) -> None:
    """Add the pages, their static files and the answers to their errors to the app."""
    for module in (signin, person_signin, me, caseload, person, person_access, plan, signoff, budget, worklist,
                   children, operations, commissioning):
        app.router.routes.extend(module.router.routes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return render("error", status=exc.status, title=exc.title, message=exc.message)

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        home = "/me" if exc.next_path.startswith("/me") else "/app"
        return RedirectResponse(f"{home}/sign-in?next={quote(exc.next_path, safe='')}", status_code=303)
