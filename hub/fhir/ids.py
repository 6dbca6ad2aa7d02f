"""The hub's resource ids: random ones for what a client creates, and deterministic ones for
records that come from a source system, keyed with a secret.

A feed's id must be the same every time the same source record arrives (so a replayed message
lands on the same resources instead of new copies), but must not be computable from the source
record by anyone else: an id that is a plain hash of "service number X, PTSD" lets an outsider
who knows the service number test whether that diagnosis exists. So a derived id is
HMAC-SHA256, under a key only the hub holds, of the name a UUIDv5 would have hashed, written as
a UUID of version 8 (RFC 9562's layout for custom UUIDs). Ids the hub assigns at random are
version 8 too, so the hub's own id space is one recognisable form: clients may not choose an
id of that form (`is_hub_form`), which is how a client's update-as-create can never land on, or
tell anything about, a resource it may not see.

The key is 32 random bytes in a file: `HUB_ID_KEY_FILE`, or `HUB_DATA_DIR/ids/id.key` made on
first use (mode 0600), like the token signing key. Every process that maps or records (API,
mapper, recorder, CLI) must use the same file; the store keeps the key's fingerprint and a
process with another key stops at start (hub/store/idkeys.py). It is never rotated: rotating it
would give every source record a new id.

Ids derived before keyed ids existed (plain UUIDv5) stay as they were; hub/store/idkeys.py maps
the keyed id a feed now derives to the old one (`legacy_form` tells them apart)."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

_NAMESPACE = uuid.UUID("3f5c8a4e-6b0d-5d8e-9a51-1c2b7e0f4a90")
KEY_BYTES = 32
GENERATED_NAME = "id.key"

_key: bytes | None = None


class IdKeyError(RuntimeError):
    """The id key cannot be read or made (said at start, never half-way through a write)."""


def use_key(key: bytes) -> None:
    """Make `key` this process's id key (tests, and processes handed the key explicitly)."""
    global _key
    if len(key) < 16:
        raise IdKeyError("the id key must be at least 16 bytes")
    _key = bytes(key)


def key_file(data_dir: str | Path | None = None, configured: str | Path | None = None) -> Path:
    """Where the id key lives: the configured file, else data_dir/ids/id.key."""
    if configured:
        return Path(configured)
    return Path(data_dir or os.environ.get("HUB_DATA_DIR") or "./.hub-data") / "ids" / GENERATED_NAME


def load_key(data_dir: str | Path | None = None, configured: str | Path | None = None) -> bytes:
    """Read (or, the first time, make) the id key and use it from now on. Two processes making
    it at once agree: the file is created exclusively and the loser reads the winner's."""
    path = key_file(data_dir, configured or os.environ.get("HUB_ID_KEY_FILE"))
    if not path.exists():
        if configured or os.environ.get("HUB_ID_KEY_FILE"):
            raise IdKeyError(f"HUB_ID_KEY_FILE {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
    text = path.read_bytes().strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise IdKeyError(f"id key file {path}: not a hex-encoded key") from None
    use_key(key)
    return key


def current_key() -> bytes:
    """The process's id key, loaded from the environment's file on first use."""
    return _key if _key is not None else load_key()


def fingerprint(key: bytes | None = None) -> str:
    """A digest that names the key without revealing it (kept in the store)."""
    return hashlib.sha256(b"ipc-hub id key\x1f" + (key or current_key())).hexdigest()[:32]


def seal(name: uuid.UUID) -> str:
    """The keyed id for what a UUIDv5 `name` would have been: HMAC-SHA256 under the id key,
    as a version 8 UUID."""
    digest = bytearray(hmac.new(current_key(), name.bytes, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def source_id(source: str, res_type: str, local_id: str) -> str:
    """The hub's id for `res_type` `local_id` as known by `source` (the same every time)."""
    return seal(legacy_source_name(source, res_type, local_id))


def derived_id(*parts: str) -> str:
    """An id derived from other ids (a Provenance from the versions it covers, a review Task
    from the two people it asks about): the same parts always give the same id."""
    return seal(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def legacy_source_name(source: str, res_type: str, local_id: str) -> uuid.UUID:
    """The UUIDv5 ids were before they were keyed (also what `source_id` keys)."""
    return uuid.uuid5(_NAMESPACE, f"{source}\x1f{res_type}\x1f{local_id}")


def new_id() -> str:
    """A fresh random id in the hub's id space (version 8, 122 random bits)."""
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def _uuid_version(text: str) -> int | None:
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    if str(value) != text.lower() or value.variant != uuid.RFC_4122:
        return None
    return value.version


def is_hub_form(res_id: str) -> bool:
    """An id of the hub's own forms (version 8 now; version 5 for ids derived before they were
    keyed): one the hub assigns or derives, never one a client chooses for update-as-create."""
    return _uuid_version(res_id) in (5, 8)


def legacy_form(res_id: str) -> bool:
    """An id derived before ids were keyed (a UUIDv5)."""
    return _uuid_version(res_id) == 5
