"""Everything one API process needs to issue and check tokens, made once from the settings:
the signing keys, the verifier, the deny set, the issuer and audience."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from hub.auth.keys import SigningKeys, load_signing_keys
from hub.auth.principal import Principal
from hub.auth.ratelimit import RateLimiter
from hub.auth.revocation import DenySet
from hub.auth.tokens import TokenRequest, TokenVerifier, bearer_token, issue_access_token, unauthorised
from hub.store import clients

if TYPE_CHECKING:
    from hub.config import Settings

log = logging.getLogger(__name__)

# The revocation listener's connection, by name (pg_stat_activity.application_name).
LISTENER_NAME = "ipc-hub-revocations"


@dataclass
class AuthRuntime:
    keys: SigningKeys
    issuer: str
    audience: str
    token_lifetime_s: int
    assertion_max_lifetime_s: int
    limiter: RateLimiter
    enabled: bool = True
    refresh_lifetime_s: int = 8 * 3600
    deny: DenySet = field(default_factory=DenySet)
    verifier: TokenVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = TokenVerifier(self.keys.jwks(), issuer=self.issuer, audience=self.audience,
                                      is_revoked=self.deny.token_revoked)

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/auth/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth/authorize"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/auth/revoke"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an Authorization header, or a 401 FhirError."""
        principal = self.verifier.verify(bearer_token(authorization))
        if self.deny.blocks(principal):
            raise unauthorised("the access token has been revoked")
        return principal

    def issue(self, request: TokenRequest) -> tuple[str, dict[str, Any]]:
        return issue_access_token(self.keys.signing, request, issuer=self.issuer,
                                  audience=self.audience, lifetime_s=self.token_lifetime_s)


def auth_runtime(settings: Settings) -> AuthRuntime:
    """The runtime for these settings (reads or generates the signing key now, not per request)."""
    return AuthRuntime(
        keys=load_signing_keys(settings.auth_signing_key_file, settings.data_dir),
        issuer=settings.token_issuer(), audience=settings.token_audience(),
        token_lifetime_s=settings.auth_token_lifetime_s,
        assertion_max_lifetime_s=settings.auth_assertion_max_lifetime_s,
        limiter=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
        enabled=settings.auth_enabled, refresh_lifetime_s=settings.auth_refresh_lifetime_s)


@asynccontextmanager
async def revocations_followed(runtime: AuthRuntime, database_url: str) -> AsyncIterator[None]:
    """Keep `runtime.deny` current for as long as the API runs: load what is revoked, then apply
    each notice as it comes; after a lost connection, reconnect and reload (notices sent while
    disconnected are in the reload)."""
    loaded = asyncio.Event()
    task = asyncio.create_task(_follow(runtime.deny, database_url, loaded), name="auth-revocations")
    try:
        waiter = asyncio.ensure_future(loaded.wait())
        done, _ = await asyncio.wait({waiter, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if task.done():
                task.result()  # raise the failure that stopped it
            raise RuntimeError("could not load revoked tokens and clients within 30 s")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _follow(deny: DenySet, database_url: str, loaded: asyncio.Event) -> None:
    delay = 0.5
    while True:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True,
                                                     application_name=LISTENER_NAME) as conn:
                await clients.listen_revocations(conn)
                tokens, revoked_clients = await clients.load_revocations(conn)
                deny.replace(tokens, revoked_clients)
                loaded.set()
                delay = 0.5
                async for notice in clients.revocation_notices(conn):
                    deny.apply(notice)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away: retry, keeping what we know
            log.warning("revocation listener lost its connection (%s); retrying", type(exc).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
