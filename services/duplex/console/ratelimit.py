"""A bounded memory of failed sign-ins per client address."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    """At most `limit` failures per `window_s` per client; then `retry_after()` says how long
    to wait. Remembers at most `max_clients` addresses (the least recently failing are
    forgotten first), so a flood from many addresses cannot grow it without bound."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window_s: float = 60.0,
        max_clients: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("limit and max_clients must be >= 1 and window_s > 0")
        self._limit = limit
        self._window_s = window_s
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        failures = self._recent(client)
        if failures is None or len(failures) < self._limit:
            return 0.0
        return max(0.0, failures[0] + self._window_s - self._clock())

    def failed(self, client: str) -> None:
        """Count one failure of `client`."""
        failures = self._recent(client)
        if failures is None:
            failures = self._failures[client] = deque(maxlen=self._limit)
        failures.append(self._clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        oldest = self._clock() - self._window_s
        while failures and failures[0] <= oldest:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures
