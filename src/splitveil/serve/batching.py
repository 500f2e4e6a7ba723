"""Dynamic micro-batching: concurrent requests share one forward pass of the cloud.

The batcher is greedy: while the model computes one batch, new requests queue up, and the next
batch takes everything queued (up to ``max_batch`` samples). Under light load a request therefore
runs at once, alone, with no added delay; under heavy load batches grow by themselves. ``max_wait``
optionally holds a batch open a little longer to collect more (throughput for latency).

The model runs in one worker thread, so the event loop keeps accepting and parsing requests while
it computes (torch releases the GIL inside its kernels) — unless the forward pass is expected, from
the time per sample measured so far, to take less than ``inline_below``. Then it runs on the event
loop: handing work to a thread and back costs two thread wake-ups (a few hundred microseconds on a
small machine), and on a light cloud half the worker would hold the GIL for most of its forward
pass anyway (small tensors' operators do not release it), so the overlap would be illusory while
the hand-offs are real. A heavy cloud half (or a large batch) still computes in the thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

_log = logging.getLogger("splitveil.serve")


class ModelError(RuntimeError):
    """The model's forward pass raised on a batch; the message names the exception, not its details."""


@dataclass
class _Pending:
    inputs: torch.Tensor
    done: asyncio.Future[torch.Tensor] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    """Runs ``forward`` on batches of up to ``max_batch`` samples gathered from concurrent ``submit``s."""

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 64,
        max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        inline_below: float = 0.001,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait}")
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self.inline_below = inline_below
        self._times = _PassTimes()
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="splitveil-cloud")
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish every request already submitted, then stop the worker."""
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: torch.Tensor) -> torch.Tensor:
        """The forward pass's output for ``inputs`` (a batch of one or more samples)."""
        if self._worker is None:
            raise RuntimeError("the batcher is not running")
        pending = _Pending(inputs)
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if not batch:
                return
            await self._compute(batch)

    async def _gather(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        if first is None:
            return []
        batch, samples = [first], len(first.inputs)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while samples < self.max_batch:
            item = await self._next(deadline)
            if item is None:  # nothing more in time, or a stop request (left queued for _gather)
                break
            if samples + len(item.inputs) > self.max_batch:
                self._carry = item  # starts the next batch
                break
            batch.append(item)
            samples += len(item.inputs)
        return batch

    async def _next(self, deadline: float) -> _Pending | None:
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                return None
        if item is None:  # stop requested: serve this batch first, then see the request again
            self._queue.put_nowait(None)
        return item

    async def _compute(self, batch: list[_Pending]) -> None:
        inputs = torch.cat([item.inputs for item in batch]) if len(batch) > 1 else batch[0].inputs
        if self.on_batch is not None:
            self.on_batch(len(inputs))
        try:
            outputs = await self._run_forward(inputs)
        except Exception as exc:  # every waiting request learns why its batch failed; logged once
            _log.exception("the forward pass failed on a batch of %d samples", len(inputs))
            failure = ModelError(f"the cloud model failed on this request's batch: {type(exc).__name__}")
            failure.__cause__ = exc  # the details stay on the server side
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(failure)
            return
        start = 0
        for item in batch:
            end = start + len(item.inputs)
            if not item.done.done():  # the client may have gone away
                item.done.set_result(outputs[start:end])
            start = end

    async def _run_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        expected = self._times.estimate(len(inputs))
        if expected is not None and expected < self.inline_below:
            return self._forward(inputs)
        # unmeasured or slow: keep the event loop free while it computes
        work = functools.partial(self._forward, inputs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        with torch.inference_mode():
            outputs = self.forward(inputs)
        # The forward pass alone, not the hand-off: that is what running inline costs.
        self._times.record(len(inputs), time.perf_counter() - started)
        return outputs


@dataclass
class _PassTimes:
    """Running means of the forward pass's time: of one-sample passes, and per sample of larger ones.

    Kept apart because a pass has a fixed cost: batches are cheaper per sample, and a lone request
    estimated from them would look faster than it is.
    """

    single: float | None = None
    per_sample: float | None = None

    def record(self, samples: int, seconds: float) -> None:
        if samples == 1:
            self.single = _running_mean(self.single, seconds)
        else:
            self.per_sample = _running_mean(self.per_sample, seconds / samples)

    def estimate(self, samples: int) -> float | None:
        """Expected seconds of a pass over ``samples``; None until a comparable pass was measured."""
        if samples == 1:
            return self.single
        if self.per_sample is None:  # only lone passes so far: a batch costs at most that per sample
            return None if self.single is None else self.single * samples
        return max(self.per_sample * samples, self.single or 0.0)


def _running_mean(previous: float | None, value: float) -> float:
    return value if previous is None else 0.9 * previous + 0.1 * value
