"""Sealing small secrets the hub must keep readable to itself only: authenticated encryption
(AES-256-GCM), each value sealed for one purpose (a value sealed as a "totp" secret cannot be
opened as a session token). The key is derived from the token signing key, which every API
process and the CLI already share (HUB_AUTH_SIGNING_KEY_FILE), so no second secret has to be
distributed; rotating the signing key (moving a new key first) makes values sealed under the
old one unreadable: sessions end and TOTP secrets must be reset."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import RSAKey


class Sealer:
    def __init__(self, signing_key: RSAKey) -> None:
        private = signing_key.as_dict(private=True)
        material = json.dumps({k: private[k] for k in sorted(private) if k in ("d", "p", "q")}).encode()
        self._aead = AESGCM(hashlib.sha256(b"ipc-hub web seal v1" + material).digest())

    def seal(self, value: Any, purpose: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(value).encode(), purpose.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, text: str | None, purpose: str) -> Any:
        """The value, or None if the text was not sealed with this key for this purpose."""
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return json.loads(self._aead.decrypt(raw[:12], raw[12:], purpose.encode()))
        except Exception:  # noqa: BLE001 - any tampering or foreign value reads as "none"
            return None
