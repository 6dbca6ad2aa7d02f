"""Issue 20: `HUB_ID_KEY_FILE` is one key for every process that maps or records. The API and the
recorder refuse another key than the record's; so does the mapper, which derives the ids: at
start against the record's database, and, where it has none, through the key fingerprint each
mapped message carries, which the recorder checks (a message mapped under another key is
dead-lettered, never recorded under ids that would split a person's record)."""
from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from psycopg import AsyncConnection

from hub.bus.envelope import Envelope
from hub.bus.worker import Message
from hub.fhir import ids, jsontext
from hub.pipeline.mapper import ID_KEY_HEADER
from hub.pipeline.recorder import record_batch
from hub.store import idkeys
from tests.pipeline.conftest import IPC_HUB

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, database_url: str, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_DATABASE_URL=database_url, HUB_ID_KEY_FILE=str(key_file), HUB_DATA_DIR=str(tmp_path / "data"),
               HUB_LOG_FORMAT="console", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


async def _record_key(pg_url: str) -> None:
    async with await AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await idkeys.ensure(conn)   # the session's key (tests/conftest.py) is the record's


def test_a_mapper_with_another_id_key_than_the_record_stops_at_start_naming_the_setting(pg_url, tmp_path):
    asyncio.run(_record_key(pg_url))
    other = tmp_path / "other.key"
    other.write_text(secrets.token_bytes(32).hex() + "\n")
    run = subprocess.run([IPC_HUB, "worker", "mapper"], env=_env(tmp_path, pg_url, other),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert "HUB_ID_KEY_FILE" in run.stderr + run.stdout
    assert "not the one this record's ids were made with" in run.stderr + run.stdout


def _mapped(fingerprint: str | None, offset: int) -> tuple[Message, str]:
    patient = {"resourceType": "Patient", "id": ids.new_id(), "name": [{"family": "Keyed"}], "birthDate": "1980-01-01"}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient/{patient['id']}"}}]}
    envelope = Envelope(source="test-key-feed", kind="fhir-transaction", payload=jsontext.dumps(bundle),
                        person_key=patient["id"], content_type="application/fhir+json")
    headers = envelope.headers() + ([(ID_KEY_HEADER, fingerprint.encode())] if fingerprint else [])
    return Message("bundles", 0, offset, envelope.key(), envelope.payload, headers, 0), patient["id"]


def test_the_recorder_refuses_a_message_mapped_under_another_id_key(pg_url):
    asyncio.run(_record_key(pg_url))
    foreign, foreign_id = _mapped(ids.fingerprint(secrets.token_bytes(32)), 1)
    ours, our_id = _mapped(ids.fingerprint(), 2)

    async def run() -> tuple:
        async with await AsyncConnection.connect(pg_url) as conn:
            outcome = await record_batch(conn, [foreign, ours])
            await conn.commit()
            cur = await conn.execute("SELECT res_id FROM resource WHERE res_type = 'Patient' AND res_id = ANY(%s)",
                                     ([foreign_id, our_id],))
            return outcome, {row[0] for row in await cur.fetchall()}

    outcome, stored = asyncio.run(run())
    assert [(r.reason, r.message.offset) for r in outcome.rejected] == [("id-key-mismatch", 1)]
    assert "HUB_ID_KEY_FILE" in outcome.rejected[0].detail
    assert stored == {our_id}
