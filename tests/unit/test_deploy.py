"""The deployment files: docker-compose.yml is valid Compose, pins its images, commits no secret
and runs only commands the hub has; the Dockerfile runs the hub as an unprivileged user.

No Docker engine is needed: the compose file is checked against the Compose specification's
JSON schema as vendored in check-jsonschema (offline), the rest by reading the files."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_SECRET_KEY = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@", re.IGNORECASE)


def _compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _with_defaults(text: str) -> str:
    """The value Compose would use with no variable set: defaults filled in, required ones marked."""
    def fill(match: re.Match) -> str:
        op = match.group("op") or ""
        return match.group("arg") if op.endswith("-") else f"<{match.group('name')}>"
    return _INTERPOLATION.sub(fill, text)


def _is_interpolation_only(text: str, *, required: bool = False) -> bool:
    """The whole value is one ${VAR} (or ${VAR:?msg}) with no default that could hold a secret."""
    match = _INTERPOLATION.fullmatch(text.strip())
    if match is None:
        return False
    op = match.group("op") or ""
    if op.endswith("-"):
        return False  # a default: the secret would be written here
    return op.endswith("?") if required else True


def _cli_help_exit(*args: str) -> int:
    """The exit status of `ipc-hub ARGS --help`, parsed in this process by the CLI's own parser
    (what decides whether a command exists; a process per command took a minute on 2 cores)."""
    from hub.cli.main import build_parser

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args([*args, "--help"])
        except SystemExit as exit_:
            return int(exit_.code or 0)
    return 0


def _hub_command(command) -> list[str] | None:
    """The argument list of an `ipc-hub ...` command (exec or shell form), else None."""
    if isinstance(command, str):
        command = command.split()
    if command and Path(str(command[0])).name == "ipc-hub":
        return [str(part) for part in command[1:]]
    return None


def _dockerfile_final_stage() -> list[str]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _instructions(stage: list[str], keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == keyword]


def test_compose_file_is_valid_compose_spec():
    bin_dir = Path(sys.executable).parent
    tool = bin_dir / "check-jsonschema"
    command = [str(tool)] if tool.exists() else [sys.executable, "-m", "check_jsonschema"]
    # The builtin schema is vendored in the package: no download, so this runs offline.
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_defines_the_production_topology():
    services = _services()
    assert {"kafka", "postgres", "migrate", "api", "mapper", "recorder", "relay", "notifier", "hl7v2"} <= set(services)
    api = services["api"]
    assert _hub_command(api["command"]) == ["api"]
    depends = api["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert _hub_command(services["migrate"]["command"]) == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"] and "healthcheck" in api
    assert any(str(p).endswith(":8080") for p in api.get("ports", []))
    for name, service in services.items():
        for other in service.get("depends_on") or {}:
            assert other in services, f"{name} depends on undefined service {other}"


def test_hub_services_reach_the_compose_database_and_broker():
    for name, service in _services().items():
        if _hub_command(service.get("command")) is None:
            continue
        env = {k: _with_defaults(v) for k, v in _environment(service).items()}
        assert "@postgres:5432/" in env.get("HUB_DATABASE_URL", ""), name
        assert env.get("HUB_KAFKA_BOOTSTRAP") == "kafka:9092", name
    assert _environment(_services()["api"])["HUB_HTTP_HOST"] == "0.0.0.0"


def test_every_image_is_pinned_to_a_version():
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in _services().items():
        image = _with_defaults(str(service.get("image", "")))
        assert image, f"{name} has no image"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.match(r"v?\d+(\.\d+)*", tag), f"{name}: {image!r} is not a version tag"
        if "build" in service:  # the hub's own image: tagged with the project's version by default
            assert tag == project_version, f"{name}: {image!r} is not tagged {project_version}"


def test_no_literal_secrets_in_compose():
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if _SECRET_KEY.search(key):
                assert _is_interpolation_only(value), f"{name}.{key} must come from ${{VAR}}, not a literal"
            for match in _URL_USERINFO.finditer(value):
                assert _is_interpolation_only(match.group("password")), (
                    f"{name}.{key}: the password in the URL must be ${{VAR}}, not a literal"
                )
    postgres = _environment(_services()["postgres"])
    # No default either: compose refuses to start until the operator sets it.
    assert _is_interpolation_only(postgres["POSTGRES_PASSWORD"], required=True)


def test_no_literal_secrets_in_dockerfile():
    for line in _dockerfile_final_stage():
        keyword = line.split(None, 1)[0].upper()
        if keyword in {"ENV", "ARG"}:
            assert not _SECRET_KEY.search(line), line
            assert not _URL_USERINFO.search(line), line


def test_compose_hub_commands_exist():
    commands = {
        name: args for name, service in _services().items()
        if (args := _hub_command(service.get("command"))) is not None
    }
    assert "api" in commands
    for name, args in commands.items():
        assert _cli_help_exit(*args) == 0, f"{name}: `ipc-hub {' '.join(args)}` is not a command"


def test_cli_check_rejects_an_unknown_command():
    # Guards the test above: `--help` must not succeed for any word whatever.
    assert _cli_help_exit("no-such-command") != 0


def test_dockerfile_runs_unprivileged():
    stage = _dockerfile_final_stage()
    users = _instructions(stage, "USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":", 1)[0].strip()
    assert user not in {"root", "0"}, f"the image runs as {users[-1]!r}"


def test_dockerfile_image_shape():
    stage = _dockerfile_final_stage()
    base = stage[0].split()[1]
    assert base.startswith("python:3.11-slim"), base
    exposed = " ".join(_instructions(stage, "EXPOSE")).split()
    assert {"8080", "2575"} <= set(exposed)
    healthcheck = " ".join(_instructions(stage, "HEALTHCHECK"))
    assert "/healthz" in healthcheck and "curl" not in healthcheck
    (cmd,) = _instructions(stage, "CMD")
    assert cmd.replace(" ", "") == '["ipc-hub","api"]'
    text = DOCKERFILE.read_text()
    assert "-r /tmp/requirements.txt" in text and "requirements.lock" in text
    assert "--no-deps ." in text


def test_image_carries_the_implementation_guide():
    """The hub refuses to start without profiles/, which a wheel install does not bring."""
    stage = _dockerfile_final_stage()
    copies = " ".join(_instructions(stage, "COPY"))
    assert "/src/profiles" in copies
    env = " ".join(_instructions(stage, "ENV"))
    assert "HUB_PROFILES_DIR=/opt/ipc-hub/profiles" in env
    assert "profiles" not in {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".hub-data", ".git", ".bench", ".pytest_cache"} <= ignored


@pytest.mark.parametrize("text, expected", [
    ("${A}", True), ("${A:?set A}", True), ("${A:-x}", False), ("secret", False), ("x${A}", False),
])
def test_interpolation_helper(text, expected):
    assert _is_interpolation_only(text) is expected
