"""Client secrets: generated with the OS's randomness, stored only as a salted scrypt hash (slow
on purpose, so a copy of the table does not give the secrets away)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

# scrypt cost: 16 MiB of memory and ~40 ms a check here; paid once per token request.
_N, _R, _P, _LENGTH = 2**14, 8, 1, 32


def new_secret() -> str:
    """A 256-bit client secret, URL-safe so it can go in a Basic header or a shell unquoted."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """`scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash so they can grow."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LENGTH)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_secret(stored: str | None, secret: str) -> bool:
    """Whether `secret` is the one `stored` was made from (constant-time comparison)."""
    if not stored or not secret:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
