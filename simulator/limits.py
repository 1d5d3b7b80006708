"""A provider's limits, as a profile can model them: `max_sessions` (concurrent sessions) and
`rate_limit_rps` (session starts per second). Over either, the upgrade is answered 429 (with
Retry-After), which is how a provider's concurrency and rate limits look to a client; a capacity
search (`voicepulse load --find-capacity`) can then be rehearsed against a known limit.

Counts cover the whole simulator, every model: a session counts from its admission (the 429
decision) until its handler ends, so a burst of upgrades arriving together cannot all slip under
the limit before the first of them starts.
"""

from __future__ import annotations

import time


class Limits:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.pending: set = set()  # admitted connections whose handler has not started
        self._buckets: dict[str, tuple[float, float]] = {}  # profile -> (tokens, at)

    def admit(self, profile, connection, active: int) -> int | None:
        """429 when admitting this connection would pass the profile's limits, else None (and
        the connection counts as pending until `started`)."""
        self.pending = {c for c in self.pending if getattr(c, "state", None) != _CLOSED}
        if profile.max_sessions is not None and active + len(self.pending) >= profile.max_sessions:
            return 429
        if profile.rate_limit_rps is not None and not self._take(profile):
            return 429
        self.pending.add(connection)
        return None

    def started(self, connection) -> None:
        self.pending.discard(connection)

    def _take(self, profile) -> bool:
        """A token bucket: rate_limit_rps tokens a second, at most one second's worth saved."""
        rate = float(profile.rate_limit_rps)
        cap = max(rate, 1.0)
        now = self.clock()
        tokens, at = self._buckets.get(profile.name, (cap, now))
        tokens = min(cap, tokens + (now - at) * rate)
        ok = tokens >= 1.0
        self._buckets[profile.name] = (tokens - 1.0 if ok else tokens, now)
        return ok


def load_ttfa_ms(profile, active: int) -> float:
    """TTFA added by load: `ttfa_per_session_ms` for every active session beyond
    `ttfa_free_sessions` (a provider that queues under load: flat, then a knee)."""
    return profile.ttfa_per_session_ms * max(0, active - profile.ttfa_free_sessions)


try:  # websockets' connection state; a connection object without one is never pruned
    from websockets.protocol import State as _State

    _CLOSED = _State.CLOSED
except ImportError:  # pragma: no cover
    _CLOSED = object()
