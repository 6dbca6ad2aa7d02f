"""The HTTP routes of every `$operation` in the registry (hub/interactions/operations): each at the
levels it declares, by POST, and by GET too when it changes nothing. The routes only say where
an operation may be called (and document it in the OpenAPI); the core runs it."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.api import paths  # noqa: F401  (registers the path convertors)
from hub.api.rest import serve
from hub.interactions.operations import OPERATIONS

router = APIRouter(prefix="/fhir")


async def _operation(request: Request) -> Response:
    return await serve(request, "optional")


def _paths(level: str, types: frozenset[str] | None, name: str) -> list[str]:
    if level == "system":
        return [f"/${name}"]
    owners = sorted(types) if types is not None else ["{res_type:fhirtype}"]
    suffix = f"/${name}" if level == "type" else f"/{{res_id:fhirid}}/${name}"
    return [f"/{owner}{suffix}" for owner in owners]


for _op in OPERATIONS.values():
    for _level in sorted(_op.levels):
        for _path in _paths(_level, _op.types_at(_level), _op.name):
            for _method in _op.methods:  # a route per method: each its own OpenAPI operation id
                router.add_api_route(_path, _operation, methods=[_method], name=f"{_op.name}-{_level}",
                                     summary=f"${_op.name} ({_level} level)", description=_op.documentation)
