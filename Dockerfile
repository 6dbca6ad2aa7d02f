# syntax=docker/dockerfile:1
# Production image for the IPC Hub: one image, every role (`ipc-hub api`, `ipc-hub migrate`, and the
# workers and connectors as they arrive), chosen by the command. Dependencies come pinned from
# requirements.lock (the whole tree, generated with pip freeze); the project itself is then
# installed without resolving anything again.
#
#   docker build -t ipc-hub:0.1.0 .
#   docker run --rm -e HUB_DATABASE_URL=postgresql://... -p 8080:8080 ipc-hub:0.1.0

# --- build: a virtualenv with the locked dependencies and the hub --------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/ipc-hub
ENV PATH=/opt/ipc-hub/bin:$PATH

WORKDIR /src
COPY requirements.lock ./
# A lock made by `pip freeze` in a development venv names the project itself as an editable
# install (`-e /path`, `ipc-hub @ file://...`): drop those lines, the project is installed below.
RUN grep -v -E '^[[:space:]]*(-e[[:space:]]|--editable|ipc-hub([[:space:]=@]|$)|ipc_hub([[:space:]=@]|$))' \
        requirements.lock > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt

# The rest of the build context (.dockerignore keeps it to the sources).
COPY . .
RUN pip install --no-cache-dir --no-deps . \
 && ipc-hub --help > /dev/null

# --- runtime: the virtualenv only, run by an unprivileged user ------------------------------------
FROM python:3.11-slim-bookworm

ENV PATH=/opt/ipc-hub/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUB_HTTP_HOST=0.0.0.0 \
    HUB_HTTP_PORT=8080 \
    HUB_DATA_DIR=/var/lib/ipc-hub

RUN groupadd --system --gid 10001 hub \
 && useradd --system --uid 10001 --gid hub --home-dir /var/lib/ipc-hub --shell /usr/sbin/nologin hub \
 && mkdir -p /var/lib/ipc-hub/mod-drop /var/lib/ipc-hub/la-drop /var/lib/ipc-hub/la-imports \
 && chown -R hub:hub /var/lib/ipc-hub

COPY --from=build /opt/ipc-hub /opt/ipc-hub
# The implementation guide the hub loads, serves and enforces (data, not code).
COPY --from=build /src/profiles /opt/ipc-hub/profiles
ENV HUB_PROFILES_DIR=/opt/ipc-hub/profiles

USER hub:hub
WORKDIR /var/lib/ipc-hub

# 8080: FHIR REST API (`ipc-hub api`); 2575: HL7 v2 over MLLP (`ipc-hub connector hl7v2`);
# 8443: MOD handovers (`ipc-hub connector mod`). The drop folders are made here, owned by the
# hub's user, so the named volumes mounted on them start writable.
EXPOSE 8080 2575 8443

# slim has no curl: ask with the interpreter the hub runs on. Only meaningful for `ipc-hub api`;
# other roles disable it in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('HUB_HTTP_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

CMD ["ipc-hub", "api"]
