"""What the server does when its capture cannot be written: the operator's ``--capture-errors`` choice.

``fail`` (the default) refuses a request that cannot be recorded (answered 507 Insufficient
Storage), and the server reports not ready until a frame of the largest request could be written
again: an audit that needs every request is never silently incomplete, and a load balancer moves
traffic to replicas whose capture works. ``skip`` serves the request uncaptured and counts it
(``splitveil_capture_skipped_total``); readiness is unaffected. Either way each failure is counted
by cause (``splitveil_capture_failures_total{cause}``) and logged when capture starts and stops failing.
"""

from __future__ import annotations

import logging
from typing import Literal

from splitveil.errors import ConfigError
from splitveil.serve.capture import CaptureError, CaptureWriter
from splitveil.serve.capture_format import HEADER
from splitveil.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)


class CaptureRecorder:
    """Records accepted requests in a :class:`CaptureWriter` and tracks whether capture works."""

    def __init__(
        self,
        writer: CaptureWriter,
        *,
        on_error: Literal["fail", "skip"],
        metrics: ServerMetrics,
        largest_body: int,
    ) -> None:
        if on_error not in ("fail", "skip"):
            raise ConfigError(f"capture errors must be 'fail' or 'skip', got {on_error!r}")
        self.writer = writer
        self.on_error = on_error
        self.metrics = metrics
        self.largest_frame = HEADER.size + largest_body
        self.failure: CaptureError | None = None

    def record(self, body: bytes) -> bool:
        """True once ``body`` is in the capture; False when skipped; :class:`CaptureError` when ``fail``."""
        try:
            self.writer.write(body)
        except CaptureError as exc:
            self._failed(exc)
            if self.on_error == "fail":
                raise
            self.metrics.capture_skipped.inc()
            return False
        self.metrics.capture_frames.inc()
        if self.failure is not None:
            self._recovered()
        return True

    def blocks_readiness(self) -> bool:
        """Whether the server should report not ready: ``fail`` mode and capture still cannot write."""
        if self.failure is None or self.on_error == "skip":
            return False
        try:
            self.writer.probe(self.largest_frame)
        except CaptureError:
            return True
        self._recovered()
        return False

    def close(self) -> None:
        self.writer.close()

    def _failed(self, exc: CaptureError) -> None:
        self.metrics.capture_failures.labels(cause=exc.cause).inc()
        if self.failure is None:
            then = "refusing requests (507)" if self.on_error == "fail" else "serving requests uncaptured"
            log.error("capture failing, %s until it works again: %s", then, exc)
            self.metrics.capture_failing.set(1)
        self.failure = exc

    def _recovered(self) -> None:
        log.warning("capture works again: %s", self.writer.path)
        self.failure = None
        self.metrics.capture_failing.set(0)
