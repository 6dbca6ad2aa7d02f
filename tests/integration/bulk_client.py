"""A Bulk Data Access 2.0.0 client written from the specification, for the tests: kick-off
(`Accept: application/fhir+json`, `Prefer: respond-async`), polling the Content-Location
(honouring `Retry-After` up to a cap, so tests stay quick), the manifest, and each file
downloaded with the access token (`requiresAccessToken`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import orjson

KICKOFF_HEADERS = {"Accept": "application/fhir+json", "Prefer": "respond-async"}


@dataclass
class Export:
    status_url: str
    manifest: dict = field(default_factory=dict)
    resources: dict[str, list[dict]] = field(default_factory=dict)  # type → resources, in file order
    deleted: list[dict] = field(default_factory=list)  # transaction Bundles from the `deleted` files
    errors: list[dict] = field(default_factory=list)   # OperationOutcomes from the `error` files

    def ids(self, res_type: str) -> set[str]:
        return {r["id"] for r in self.resources.get(res_type, [])}


def kick_off(client: httpx.Client, path: str, params: dict | list | None = None, **headers) -> httpx.Response:
    return client.get(path, params=params, headers={**KICKOFF_HEADERS, **headers})


def wait_complete(client: httpx.Client, status_url: str, timeout: float = 60.0) -> httpx.Response:
    """Poll until the export answers anything but 202 (in progress)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(status_url)
        if r.status_code != 202:
            return r
        assert "X-Progress" in r.headers and r.headers["Retry-After"].isdigit()
        if time.monotonic() > deadline:
            raise AssertionError(f"export not complete after {timeout:.0f} s: {r.headers.get('X-Progress')}")
        time.sleep(min(float(r.headers["Retry-After"]), 0.1))


def download(client: httpx.Client, manifest: dict) -> Export:
    found = Export(status_url="", manifest=manifest)
    for kind, target in (("output", None), ("deleted", found.deleted), ("error", found.errors)):
        for item in manifest.get(kind) or []:
            r = client.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/fhir+ndjson")
            lines = [orjson.loads(line) for line in r.content.splitlines()]
            assert len(lines) == item.get("count", len(lines))
            for resource in lines:
                if target is None:
                    assert resource["resourceType"] == item["type"]
                    found.resources.setdefault(item["type"], []).append(resource)
                else:
                    target.append(resource)
    return found


def export(client: httpx.Client, path: str, params: dict | list | None = None, **headers) -> Export:
    """A whole export: kick-off, poll, manifest, every file."""
    r = kick_off(client, path, params, **headers)
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    done = wait_complete(client, status_url)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    found = download(client, done.json())
    found.status_url = status_url
    return found
