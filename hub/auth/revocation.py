"""What has been revoked, held in memory in every API process so a request never waits on the
database to learn it: filled from the store at start and kept current by change notifications
(hub.store.clients.listen_revocations)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from hub.auth.principal import Principal

# Expired token ids are dropped from the set at most this often (their tokens fail on expiry anyway).
_PRUNE_EVERY_S = 60.0


class DenySet:
    """Revoked token ids (with their expiry) and revoked clients."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tokens: dict[str, int] = {}
        self._clients: set[str] = set()
        self._clock = clock
        self._pruned_at = clock()

    def revoke_token(self, jti: str, expires_at: int) -> None:
        self._tokens[jti] = expires_at
        self._maybe_prune()

    def revoke_client(self, client_id: str) -> None:
        self._clients.add(client_id)

    def replace(self, tokens: Iterable[tuple[str, int]], clients: Iterable[str]) -> None:
        """Everything revoked, as loaded from the store (at start, and after a lost connection)."""
        self._tokens = dict(tokens)
        self._clients = set(clients)

    def token_revoked(self, jti: str) -> bool:
        return jti in self._tokens

    def blocks(self, principal: Principal) -> bool:
        """Whether this caller's token or client has been revoked."""
        return principal.token_id in self._tokens or principal.client_id in self._clients

    def apply(self, notice: str) -> None:
        """Apply one change notice: `token <jti> <exp>` or `client <id>`."""
        kind, _, rest = notice.partition(" ")
        if kind == "token":
            jti, _, exp = rest.partition(" ")
            self.revoke_token(jti, int(exp) if exp.isdigit() else 2**62)
        elif kind == "client":
            self.revoke_client(rest)

    def _maybe_prune(self) -> None:
        now = self._clock()
        if now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        self._tokens = {jti: exp for jti, exp in self._tokens.items() if exp >= now - 60}
