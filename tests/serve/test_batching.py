"""Micro-batching: concurrent requests share forward passes and each gets its own rows back."""

import asyncio
import threading
import time

import pytest
import torch

from splitveil.serve.batching import MicroBatcher, ModelError


def _run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_are_batched_and_answered_in_order():
    sizes = []

    def slow_double(x):
        time.sleep(0.02)  # while one batch computes, the others queue up
        return x * 2

    async def scenario():
        batcher = MicroBatcher(slow_double, max_batch=16, on_batch=sizes.append)
        await batcher.start()
        inputs = [torch.full((1 + i % 3, 2), float(i)) for i in range(12)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.stop()
        return inputs, outputs

    inputs, outputs = _run(scenario())
    for x, y in zip(inputs, outputs, strict=True):
        assert torch.equal(y, x * 2)
    assert sum(sizes) == sum(len(x) for x in inputs)
    assert max(sizes) > 1 and max(sizes) <= 16


def test_max_batch_one_disables_batching():
    sizes = []

    async def scenario():
        batcher = MicroBatcher(lambda x: x, max_batch=1, on_batch=sizes.append)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(torch.zeros(1, 1)) for _ in range(6)))
        await batcher.stop()

    _run(scenario())
    assert sizes == [1] * 6


def test_a_failing_forward_fails_only_its_batch():
    async def scenario():
        def forward(x):
            if (x < 0).any():
                raise ValueError("negative")
            return x

        batcher = MicroBatcher(forward, max_batch=1)
        await batcher.start()
        results = await asyncio.gather(
            batcher.submit(-torch.ones(1)), batcher.submit(torch.ones(1)), return_exceptions=True
        )
        await batcher.stop()
        return results

    bad, good = _run(scenario())
    assert isinstance(bad, ModelError) and str(bad).endswith(": ValueError")  # the type, not the details
    assert isinstance(bad.__cause__, ValueError) and torch.equal(good, torch.ones(1))


def test_stop_drains_what_was_submitted():
    release = threading.Event()

    async def scenario():
        batcher = MicroBatcher(lambda x: (release.wait(5), x)[1], max_batch=2)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(torch.full((1,), float(i)))) for i in range(5)]
        await asyncio.sleep(0.01)
        stopping = asyncio.create_task(batcher.stop())
        release.set()
        await stopping
        return [task.result() for task in pending]

    results = _run(scenario())
    assert [int(r) for r in results] == list(range(5))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda x: x, max_batch=0)
    with pytest.raises(ValueError, match="max_wait"):
        MicroBatcher(lambda x: x, max_wait=-1)


def _threads_used(forward_seconds: float, requests: int = 5) -> list[str]:
    """Names of the threads that ran each of ``requests`` sequential lone requests."""
    threads = []

    def forward(x):
        threads.append(threading.current_thread().name)
        time.sleep(forward_seconds)
        return x + 1

    async def scenario():
        batcher = MicroBatcher(forward, inline_below=0.005)
        await batcher.start()
        for _ in range(requests):
            assert torch.equal(await batcher.submit(torch.zeros(1, 2)), torch.ones(1, 2))
        await batcher.stop()

    _run(scenario())
    return threads


def test_a_fast_lone_request_runs_on_the_event_loop_once_measured():
    threads = _threads_used(0.0)
    assert threads[0].startswith("splitveil-cloud")  # not measured yet: the worker thread
    assert threads[1:] == [threading.main_thread().name] * 4  # measured fast: no hand-off


def test_a_slow_forward_stays_off_the_event_loop():
    assert all(name.startswith("splitveil-cloud") for name in _threads_used(0.02))


def _batch_threads(seconds_per_sample: float, inline_below: float = 0.005) -> list[tuple[int, str]]:
    """(samples, thread) of each forward pass: one lone request, then eight concurrent ones."""
    passes = []

    def forward(x):
        passes.append((len(x), threading.current_thread().name))
        time.sleep(seconds_per_sample * len(x))
        return x + 1

    async def scenario():
        batcher = MicroBatcher(forward, max_batch=8, inline_below=inline_below)
        await batcher.start()
        await batcher.submit(torch.zeros(1, 2))  # measured in the worker thread
        await asyncio.gather(*(batcher.submit(torch.zeros(1, 2)) for _ in range(8)))
        await batcher.stop()

    _run(scenario())
    return passes


def test_a_batch_expected_to_be_fast_runs_on_the_event_loop():
    # A pass that does nothing, against a threshold of a second: measured in the worker thread, it is
    # far below that even on a loaded machine (at 5 ms, scheduling delays under load sent it there).
    passes = _batch_threads(0.0, inline_below=1.0)
    assert passes[0][1].startswith("splitveil-cloud")
    assert {name for _, name in passes[1:]} == {threading.main_thread().name}
    assert sum(samples for samples, _ in passes[1:]) == 8


def test_a_batch_expected_to_be_slow_computes_in_the_worker_thread():
    # 1 ms a sample: a lone request (1 ms) would run inline, a batch of eight (8 ms) would not.
    passes = _batch_threads(0.001)
    assert all(name.startswith("splitveil-cloud") for samples, name in passes if samples * 0.001 >= 0.005)
    assert any(samples >= 5 for samples, _ in passes)


def test_a_lone_request_is_not_judged_by_the_batches_cheaper_time_per_sample():
    from splitveil.serve.batching import _PassTimes

    times = _PassTimes()
    assert times.estimate(1) is None and times.estimate(8) is None  # nothing measured: the thread
    for _ in range(20):
        times.record(64, 0.004)  # large batches: 62.5 µs a sample
    assert times.estimate(1) is None  # a lone pass's fixed cost is unknown: measure it in the thread
    times.record(1, 0.003)
    assert times.estimate(1) == 0.003 and times.estimate(2) == 0.003  # never below a lone pass
    assert times.estimate(64) == pytest.approx(0.004)
