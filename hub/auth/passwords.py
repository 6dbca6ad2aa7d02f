"""Local accounts' secrets: passwords hashed with Argon2id (argon2-cffi, OWASP's first choice
of password KDF; memory-hard, so a stolen table is slow to attack on GPUs), optional TOTP
(RFC 6238) as a second factor, and the lockout rule.

A sign-in attempt's answer never says which part was wrong (unknown name, wrong password,
wrong code or a locked account all read the same to the person trying), so names cannot be
probed; an unknown name still costs one hash, so timing does not tell either."""
from __future__ import annotations

import functools
import secrets

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults are RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes).
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Made on first use, not at import: a hash costs 64 MiB and a noticeable moment, and every
    `ipc-hub` command and worker imports this module."""
    return _HASHER.hash(secrets.token_urlsafe(16))


MIN_PASSWORD_LENGTH = 12


class PasswordPolicyError(ValueError):
    """A password an operator chose that is too weak to set (said as is)."""


def check_policy(password: str, username: str) -> None:
    """NCSC password guidance: length over composition rules; not the account's own name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise PasswordPolicyError("a password must not contain the user name")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches; with no stored hash (an unknown or external account) a
    dummy hash is checked instead so the answer takes as long."""
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """A generated password for `users add` / `reset-password` when none is given."""
    return secrets.token_urlsafe(15)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "IPC Hub") -> str:
    """The otpauth:// URI an authenticator app takes (typed in, or shown as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def verify_totp(secret: str | None, code: str) -> bool:
    """A 6-digit code from the current 30-second window or the one either side (clock drift)."""
    if not secret:
        return True
    code = (code or "").strip().replace(" ", "")
    return code.isdigit() and len(code) == 6 and pyotp.TOTP(secret).verify(code, valid_window=1)
