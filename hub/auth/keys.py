"""The keys the hub signs access tokens with: from HUB_AUTH_SIGNING_KEY_FILE, or generated once
into the data folder on the embedded default so tokens survive a restart.

A key file may hold one key (PEM or JWK) or a JWKS. In a JWKS the first private RSA key signs and
every key is published, which is how a key is rotated: put the new key first, keep the old one
until the longest-lived token it signed has expired, then drop it."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from hub.auth.tokens import ALGORITHM, generate_signing_key, public_jwks

log = logging.getLogger(__name__)

GENERATED_NAME = "signing-key.jwks"


class KeyFileError(ValueError):
    """A signing key file that cannot be used (said at start, never at the first request)."""


@dataclass(frozen=True)
class SigningKeys:
    signing: RSAKey
    published: tuple[RSAKey, ...]

    def jwks(self) -> dict[str, Any]:
        return public_jwks(list(self.published))


def load_signing_keys(key_file: Path | None, data_dir: Path) -> SigningKeys:
    """The configured keys, or the generated one in data_dir/auth (made on first use)."""
    if key_file is not None:
        return parse_key_file(Path(key_file).read_bytes(), str(key_file))
    return _generated(Path(data_dir) / "auth" / GENERATED_NAME)


def parse_key_file(data: bytes, name: str = "key file") -> SigningKeys:
    """Keys from PEM, a JWK or a JWKS; the first private RSA key signs."""
    text = data.strip()
    if text.startswith(b"{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise KeyFileError(f"{name}: not valid JSON") from exc
        entries = document.get("keys", [document]) if isinstance(document, dict) else []
        keys = [_rsa(RSAKey.import_key, entry, name) for entry in entries]
    else:
        keys = [_rsa(RSAKey.import_key, data, name)]
    private = [k for k in keys if k.is_private]
    if not private:
        raise KeyFileError(f"{name}: no private RSA key to sign tokens with")
    signing = private[0]
    return SigningKeys(signing=signing, published=tuple(keys))


def _rsa(importer, value, name: str) -> RSAKey:
    try:
        key = importer(value)
    except Exception as exc:  # joserfc raises several kinds for unreadable key material
        raise KeyFileError(f"{name}: not an RSA key ({type(exc).__name__})") from None
    if key.kid is None or key.get("alg") is None:
        # A PEM carries no kid: derive a stable one so verifiers can pick the key.
        key = RSAKey.import_key(key.as_dict(private=key.is_private), parameters={
            "kid": key.kid or key.thumbprint(), "use": "sig", "alg": ALGORITHM})
    return key


def _generated(path: Path) -> SigningKeys:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = generate_signing_key()
        document = json.dumps({"keys": [key.as_dict(private=True)]}).encode()
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        try:
            # A hard link appears whole or not at all: processes starting together agree on one key.
            os.link(staged, path)
            log.info("generated a token signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    return parse_key_file(path.read_bytes(), str(path))
