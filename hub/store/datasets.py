"""The queries behind a linked dataset (hub/datasets): each recipient's pseudonym key, the records
read under the recipient's own access (consent and scopes, as its searches would), and the
release record of what left, for whom and why."""
from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Collection
from datetime import datetime

from psycopg import AsyncConnection

from hub.search.access import Access
from hub.search.sql import build_rows_sql


async def recipient_key(conn: AsyncConnection, recipient: str) -> bytes:
    """The recipient's own secret key, made on its first release (32 random bytes)."""
    await conn.execute("INSERT INTO dataset_recipient_key (recipient, key) VALUES (%s, %s) "
                       "ON CONFLICT (recipient) DO NOTHING", (recipient, secrets.token_bytes(32)))
    cur = await conn.execute("SELECT key FROM dataset_recipient_key WHERE recipient = %s", (recipient,))
    return bytes((await cur.fetchone())[0])


async def visible_rows(conn: AsyncConnection, res_type: str, access: Access, patients: Collection[str]
                       ) -> AsyncIterator[tuple[str, str, int, str]]:
    """(patient id, id, version, content) of every current `res_type` in these people's records that
    `access` may read."""
    if not patients:
        return
    sql, params = build_rows_sql(res_type, "r.patient_id, r.res_id, r.version, r.content::text", access=access,
                                 patients=list(patients), in_a_record=True)
    cur = await conn.execute(sql, params)
    for patient_id, res_id, version, content in await cur.fetchall():
        yield patient_id, res_id, version, content


async def record_release(conn: AsyncConnection, *, recipient: str, organisation: str | None,
                         partner_class: str | None, purpose_of_use: str | None, purpose: str, cohort: str,
                         people: int, columns: list[str], suppressed: int, sha256: str, created: datetime) -> str:
    release = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO dataset_release (id, recipient, organisation, partner_class, purpose_of_use, purpose, cohort, "
        "people, columns, suppressed, sha256, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (release, recipient, organisation, partner_class, purpose_of_use, purpose, cohort, people, columns,
         suppressed, sha256, created))
    return release
