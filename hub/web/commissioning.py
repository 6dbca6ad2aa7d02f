"""Commissioning (`/app/commissioning`, commissioners only): how many people the record holds,
and for each cohort the hub finds, the figures commissioners plan with and show what changed by —
identified, offered, accepted, with a plan, with a PB/PHB/IPB, reviews in date and on time, spend
against budget, outcome measures — as bar charts (SVG drawn on the server) with the same figures
in a table beside each, and the whole as a CSV download (`/app/commissioning/summary.csv`).

Every figure is the API's `Group/[id]/$cohort-report` under the commissioner's own access: a
person whose record they may not see is not counted, and small numbers are withheld exactly as in
a linked dataset ("suppressed", never a bar). No person is named on this page or in the CSV."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.cohorts.definitions import COHORT_PROFILE
from hub.datasets import summary
from hub.web.access import require_role, signed_in
from hub.web.context import page_context
from hub.web.pages import render
from hub.web.record import Record

router = APIRouter(include_in_schema=False)

# The counts of people each cohort's chart shows, in this order (sums, means and shares are in
# the table: they have other units and would mislead on the same axis).
CHARTED = ("identified", "offered", "accepted", "with-plan", "with-budget", "review-in-date", "review-overdue",
           "wellbeing-improved")


async def _cohorts(record: Record) -> tuple[int | None, list[dict[str, Any]]]:
    """The population the commissioner may see, and each cohort with its summary figures."""
    population = (await record.search("Patient", [("_summary", "count")])).total
    groups = await record.search("Group", [("_profile", COHORT_PROFILE), ("_count", "100")])
    cohorts = []
    for group in sorted(groups.matches, key=lambda g: (g.get("name") or g["id"]).lower()):
        report = await record.cohort_report(group["id"])
        if report is None:
            continue
        figures = summary.read(report)
        cohorts.append({"id": group["id"], "name": group.get("name") or group["id"], "report": report,
                        "figures": figures, "chart": chart(figures, population)})
    return population, cohorts


def chart(figures: list[dict[str, Any]], population: int | None) -> dict[str, Any]:
    """A horizontal bar chart of the cohort's counts of people, as SVG geometry; a withheld count
    has no bar and says so."""
    shown = [f for f in figures if f["code"] in CHARTED and f["unit"] is None]
    top = max([1, *(f["people"] or 0 for f in shown)])
    width, label, bar, gap = 640, 300, 20, 10
    bars = []
    for i, f in enumerate(shown):
        people = f["people"]
        bars.append({"y": 10 + i * (bar + gap), "words": f["words"], "people": people,
                     "w": round((width - label - 60) * (people or 0) / top, 1)})
    share = None
    identified = next((f["people"] for f in figures if f["code"] == "identified"), None)
    if population and identified is not None:
        share = round(100 * identified / population, 1)
    return {"width": width, "label": label, "bar": bar, "height": 20 + len(shown) * (bar + gap), "bars": bars,
            "share": share}


@router.get("/app/commissioning")
async def commissioning(request: Request) -> Response:
    workspace = await signed_in(request)
    require_role(workspace, "commissioner")
    population, cohorts = await _cohorts(workspace.record)
    minimum = request.app.state.settings.dataset_min_count
    return render("commissioning", **page_context(
        workspace, "commissioning", "Commissioning", population=population, cohorts=cohorts, minimum=minimum))


@router.get("/app/commissioning/summary.csv")
async def summary_csv(request: Request) -> Response:
    workspace = await signed_in(request)
    require_role(workspace, "commissioner")
    population, cohorts = await _cohorts(workspace.record)
    today = datetime.now(UTC).date().isoformat()
    text = summary.as_csv([(c["name"], c["report"]) for c in cohorts])
    text += f"all people in the record,population,people you may see,{population if population is not None else ''},,,{today}\n"
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="ipc-cohort-summary-{today}.csv"', "Cache-Control": "no-store"})
