"""/docs: Swagger UI for the OpenAPI document, served entirely from the hub (no CDN: a hub on
a closed network, or a strict content security policy, must still show its docs). The assets
come from the fastapi-offline package, which ships Swagger UI's built files."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response

import fastapi_offline

router = APIRouter()

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon.png": "image/png"}
ASSET_PATHS = frozenset(f"/docs/assets/{name}" for name in ASSET_TYPES)


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="IPC Hub API",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon.png")


@router.get("/docs/assets/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        return Response(status_code=404)
    return FileResponse(ASSETS / name, media_type=media_type,
                        headers={"Cache-Control": "public, max-age=86400"})
