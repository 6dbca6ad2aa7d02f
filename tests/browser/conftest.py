"""The browser tests' stage: `ipc-hub up` on the embedded default with its demonstration cohort
and accounts (what `make run` gives a new user), a real OpenID Connect provider started locally
(npm oidc-provider, tests/oidc), and Debian's Chromium driven by Playwright.

Chromium may only reach this machine's loopback addresses: every other request is aborted
(the test provider's own pages name a web font on the internet)."""
from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.integration.test_cli import IPC_HUB, _env
from tests.pipeline.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
OIDC_DIR = ROOT / "tests" / "oidc"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PLAN_CATEGORY = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-plan-category"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OIDC_CLIENT_ID, OIDC_SECRET = "ipc-hub-tests", "a-test-only-client-secret"
EXTERNAL_SUBJECT = "cis2-555000111"


class OidcProvider:
    """oidc-provider under the machine's Node.js, until stop()."""

    def __init__(self, port: int, *redirect_uris: str) -> None:
        if not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
            raise AssertionError("the test OpenID Connect provider is not installed: run `make oidc`")
        self.issuer = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(["node", "provider.mjs", str(port), OIDC_CLIENT_ID, OIDC_SECRET, *redirect_uris],
                                        cwd=OIDC_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                if line.startswith("ready "):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            self.process.kill()
            raise AssertionError("the OpenID Connect provider did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Hub:
    """`ipc-hub up` with the demonstration cohort, ready once the veteran is in the record."""

    def __init__(self, data_dir: Path, oidc: OidcProvider, http_port: int) -> None:
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{http_port}"
        self.env = _env(HUB_DATA_DIR=str(data_dir), HUB_HTTP_PORT=str(http_port),
                        HUB_EMBEDDED_KAFKA_PORT=str(free_port()), HUB_MLLP_PORT=str(free_port()),
                        HUB_MOD_PORT=str(free_port()), HUB_DEMO_COHORT="true", HUB_MOD_POLL_INTERVAL_S="0.2",
                        HUB_LA_POLL_INTERVAL_S="0.2", HUB_LOG_LEVEL="warning", HUB_OIDC_ISSUER=oidc.issuer,
                        HUB_PLAN_WORKER_INTERVAL_S="5",  # growing-up steps within seconds of a child arriving
                        HUB_OIDC_CLIENT_ID=OIDC_CLIENT_ID, HUB_OIDC_CLIENT_SECRET=OIDC_SECRET,
                        HUB_OIDC_DISPLAY_NAME="NHS Care Identity (test provider)",
                        # the same test provider stands in for NHS login for the person's pages (issue 18)
                        HUB_PERSON_OIDC_ISSUER=oidc.issuer, HUB_PERSON_OIDC_CLIENT_ID=OIDC_CLIENT_ID,
                        HUB_PERSON_OIDC_CLIENT_SECRET=OIDC_SECRET, HUB_PERSON_OIDC_DISPLAY_NAME="NHS login (test provider)")
        self.process = subprocess.Popen([IPC_HUB, "up"], env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                if "IPC Hub is ready" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90):
            self.process.kill()
            raise AssertionError("ipc-hub up did not become ready:\n" + "".join(self.output))
        self.passwords = dict(re.findall(r"^\s+\w+\s+(demo\.\w+)\s+(\S+)\s", "".join(self.output), re.MULTILINE))
        assert {"demo.coordinator", "demo.commissioner", "demo.operator", "demo.charity"} <= set(self.passwords), \
            "the banner does not say how to sign in:\n" + "".join(self.output)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([IPC_HUB, *args], env=self.env, capture_output=True, text=True, timeout=60, check=True)

    def bearer(self) -> dict[str, str]:
        found = re.search(r"curl -s -u (\S+):(\S+) -d grant_type=client_credentials", "".join(self.output))
        answer = httpx.post(f"{self.base}/auth/token", data={"grant_type": "client_credentials"}, auth=found.groups())
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


@pytest.fixture(scope="module")
def oidc_and_hub(tmp_path_factory) -> Iterator[tuple[OidcProvider, Hub]]:
    http_port = free_port()
    oidc = OidcProvider(free_port(), f"http://127.0.0.1:{http_port}/auth/oidc/callback",
                        f"http://127.0.0.1:{http_port}/auth/person/callback")
    hub = None
    try:
        hub = Hub(tmp_path_factory.mktemp("browser-hub"), oidc, http_port)
        auth = hub.bearer()

        def total(res_type: str, **params: str) -> int:
            return httpx.get(f"{hub.base}/fhir/{res_type}", headers=auth, params=params).json().get("total", 0)

        wait_for(lambda: total("Patient", identifier="30112233"), 120, "the demonstration veteran")
        wait_for(lambda: total("Patient", identifier="P100001"), 120, "the council's person")
        wait_for(lambda: total("CarePlan", category=f"{PLAN_CATEGORY}|budget-statement"), 120, "a budget statement")
        yield oidc, hub
    finally:
        if hub is not None:
            hub.stop()
        oidc.stop()


@pytest.fixture(scope="module")
def hub(oidc_and_hub) -> Hub:
    return oidc_and_hub[1]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield found
        found.close()


def _loopback_only(route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "about:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture()
def new_page(browser):
    """`new_page()`: a page in a fresh browser profile (its own cookies). Axe is injected by
    `check_page`, so these contexts let a test script run despite the pages' strict CSP."""
    contexts = []

    def make():
        context = browser.new_context(bypass_csp=True, viewport={"width": 1200, "height": 900})
        context.route("**/*", _loopback_only)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def check_page(page, name: str) -> None:
    """Keep a screenshot of the page, and check it with axe-core (WCAG 2.0-2.2 A and AA): no
    serious or critical violations."""
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})""")
    bad = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
           for v in results["violations"] if v["impact"] in ("serious", "critical")]
    (SCREENSHOTS / f"{name}.axe.json").write_text(json.dumps(results["violations"], indent=1))
    assert not bad, f"accessibility violations on {name}: {bad}"
    assert results["passes"], "axe checked nothing"


def sign_in(page, hub: Hub, username: str, *, start: str = "/app", screenshot: str | None = None) -> None:
    page.goto(f"{hub.base}{start}")
    page.wait_for_selector("h1:has-text('Sign in to IPC Hub')")
    if screenshot:
        check_page(page, screenshot)
    page.fill("#username", username)
    page.fill("#password", hub.passwords[username])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/app"))
    page.wait_for_selector("text=Sign out")
