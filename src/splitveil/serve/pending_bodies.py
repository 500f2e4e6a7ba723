"""A budget over the request bodies the server holds at once, whatever the number of connections.

A request body is buffered whole before it is decoded, so each connection sending one holds up to
the largest valid body in memory. The connection cap alone does not bound that: probes held 600
half-sent maximum-size bodies and took the server to 1.27 GB. :class:`PendingBodies` counts the
bytes of every body being read or served; a chunk that would take the total past the budget ends
its request with a 503 (``pending_bytes``, with ``Retry-After``), so memory for bodies stays under
the budget however many clients send at once.

Bytes are reserved as they arrive, not as declared: a client holds only what it has really sent,
and a request whose declared length cannot fit right now is refused before its body is read.
Everything runs on the server's one event loop, so plain integers need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitveil.errors import ConfigError

#: The default budget: enough for hundreds of typical requests, far below a server's memory.
DEFAULT_PENDING_BYTES = 256 * 2**20


@dataclass
class PendingBodies:
    """Bytes of request bodies held now (``held``) against a fixed ``capacity``."""

    capacity: int
    held: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"the pending-body budget must be >= 1 byte, got {self.capacity}")

    @classmethod
    def for_server(cls, requested: int | None, max_body: int) -> PendingBodies:
        """The budget a server with bodies up to ``max_body`` bytes gets: ``requested``, or the
        default raised to two of the largest bodies; a budget that cannot hold one valid body is
        refused, since no full-size request could ever be served."""
        if requested is None:
            return cls(max(DEFAULT_PENDING_BYTES, 2 * max_body))
        if requested < max_body:
            raise ConfigError(
                f"--max-pending-bytes {requested} cannot hold one full request ({max_body} bytes at "
                "--max-request-samples); raise it or lower --max-request-samples"
            )
        return cls(requested)

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit now (a check, nothing is reserved)."""
        return self.held + size <= self.capacity

    def reserve(self, size: int) -> bool:
        """Hold ``size`` more bytes if they fit; False (and nothing held) if not."""
        if not self.fits(size):
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        if not 0 <= size <= self.held:
            raise ValueError(f"releasing {size} bytes of a budget holding {self.held}")
        self.held -= size
