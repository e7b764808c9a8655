"""Which local addresses aiortc offers as ICE host candidates.

aioice gathers host candidates from `aioice.ice.get_host_addresses(use_ipv4=, use_ipv6=)`, a
module function that lists every interface except 127.0.0.1, with no per-connection setting.
A deployment must choose (`webrtc.host_addresses`: the LAN address, not a docker bridge) and
tests must stay on loopback, so the list has to be restricted per peer connection.

The restriction is a `ContextVar`, not a process-wide setting: `restricted_host_addresses()`
sets it around `setLocalDescription` (where aiortc gathers), and the wrapper installed over
`aioice.ice.get_host_addresses` reads it. aiortc gathers inside the awaiting task and in tasks
created from it, which inherit the context, so two peers gathering at the same time each see
their own list, and nothing outlives the `with` block (no state leaks from one test to the
next). Outside such a block the wrapper calls aioice's own function unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import aioice.ice

_HostAddresses = Callable[..., list[str]]

# Context-scoped (never assigned at module level after import): None means "aioice's default".
_RESTRICTED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "duplex_ice_host_addresses", default=None
)
_MARK = "_duplex_restricts"


def _install() -> None:
    """Wrap aioice's function once per process; the wrapper is a no-op outside a block."""
    current: _HostAddresses = aioice.ice.get_host_addresses
    if getattr(current, _MARK, False):
        return
    original = current

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = _RESTRICTED.get()
        if addresses is None:
            return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    setattr(get_host_addresses, _MARK, True)
    aioice.ice.get_host_addresses = get_host_addresses


@contextlib.contextmanager
def restricted_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within the block, ICE gathering in this task offers only `addresses` (none: no limit).

    Wrap `await pc.setLocalDescription(...)` in it.
    """
    if not addresses:
        yield
        return
    _install()
    token = _RESTRICTED.set(tuple(addresses))
    try:
        yield
    finally:
        _RESTRICTED.reset(token)
