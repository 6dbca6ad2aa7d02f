"""Rendering pages: the Jinja2 environment (autoescaped), the headers every page carries, and
small formatting helpers the templates share. Pages are server-rendered HTML in the NHS design
system's look (hub/web/static/nhsuk, vendored); they work without JavaScript."""
from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from hub.fhir.validation.guide import load_guide

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def page_csp(*form_targets: str) -> str:
    """The pages' Content-Security-Policy: everything from the hub itself, nothing inline, no
    framing. A form may post to the hub, and follow a redirect to the given origins (an app's
    redirect URI after sign-in: Chromium applies form-action to the redirect too)."""
    origins = " ".join(sorted({_origin(t) for t in form_targets if _origin(t)}))
    form_action = f"'self' {origins}".strip()
    return ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
            f"font-src 'self'; connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; "
            "base-uri 'none'")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def render(name: str, *, status: int = 200, csp: str | None = None, **context: Any) -> HTMLResponse:
    """A page from `templates/<name>.html`, never cached (it shows a person's record)."""
    html = _ENV.get_template(f"{name}.html").render(**context)
    return HTMLResponse(html, status_code=status, headers={
        "Content-Security-Policy": csp or page_csp(), "Cache-Control": "no-store"})


def _when(value: Any) -> str:
    """A FHIR date or instant as people read it: 3 December 2026, 14:05."""
    if not value:
        return ""
    text = str(value)
    try:
        if len(text) == 10:
            return date.fromisoformat(text).strftime("%-d %B %Y")
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.strftime("%-d %B %Y, %H:%M")
    except ValueError:
        return text


def _money(value: Any) -> str:
    try:
        return f"£{float(value):,.2f}"
    except (TypeError, ValueError):
        return ""


def person_name(resource: dict[str, Any] | None) -> str:
    """A person's or practitioner's name for display."""
    if not resource:
        return ""
    for name in resource.get("name") or []:
        if name.get("text"):
            return name["text"]
        given = " ".join(name.get("given") or [])
        return f"{given} {name.get('family', '')}".strip()
    return resource.get("id", "")


def concept_text(value: Any) -> str:
    """A CodeableConcept (or Coding) as text: its text, a coding's display, or the display the
    IPC guide's CodeSystem gives the code (feeds often send codes alone)."""
    if not value:
        return ""
    if isinstance(value, list):
        return ", ".join(filter(None, (concept_text(v) for v in value)))
    if value.get("text"):
        return value["text"]
    for coding in value.get("coding") or [value]:
        if coding.get("display"):
            return coding["display"]
        if coding.get("code"):
            return _guide_displays().get((coding.get("system"), coding["code"]), coding["code"])
    return ""


@lru_cache(maxsize=1)
def _guide_displays() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}

    def walk(system: str, concepts: list[dict[str, Any]]) -> None:
        for concept in concepts:
            if concept.get("display"):
                found[(system, concept["code"])] = concept["display"]
            walk(system, concept.get("concept") or [])

    for url, code_system in load_guide().code_systems.items():
        walk(url, code_system.get("concept") or [])
    return found


_ENV.filters.update(when=_when, money=_money, person_name=person_name, concept=concept_text)
