"""``benchmark_serving`` end to end on a tiny bundle: every part measured, and the figures consistent; cloud
runtimes side by side."""

import json

import pytest
import torch

from splitveil.errors import ConfigError
from splitveil.perf.serving import ServeBenchSettings, benchmark_serving, serving_markdown
from splitveil.perf.serving_runtimes import compare_runtimes, runtimes_markdown
from splitveil.serve.codec import CODECS, encode
from splitveil.serve.loadgen import run_load


def test_every_part_is_measured_against_real_servers(bundle, trained, tiny_data):
    settings = ServeBenchSettings(
        concurrency=(1, 3), requests=30, round_trips=12, soak_requests=60, soak_warmup=10, distinct_bodies=4
    )
    result = benchmark_serving(bundle, tiny_data.test.images, unsplit=trained.model, settings=settings, progress=False)
    assert set(result.baselines) == {"unsplit", "in_process_split"}
    assert (result.cut, result.defense, result.strength) == ("relu22", "none", 0.0)  # read from the bundle
    assert set(result.round_trip) == {*CODECS, "healthz"}
    # int8 < float16 < float32 on the wire, as sent by the load generator
    sizes = {row["codec"]: row["bytes_per_request"] for row in result.load if row["concurrency"] == 1}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert [(row["codec"], row["concurrency"]) for row in result.load] == [(c, n) for c in CODECS for n in (1, 3)]
    assert all(row["errors"] == 0 and row["requests"] == 30 for row in result.load)
    assert result.batching["speedup"] > 0 and result.batching["unbatched"]["errors"] == 0
    for side in ("batched", "unbatched"):  # /proc counts in ticks of 10 ms, so a short run may read 0
        assert result.batching[side]["server_cpu_us_per_request"] >= 0
        assert 0 <= result.batching[side]["server_cores_busy"] < 8
    assert result.soak["requests"] == 60 and result.soak["errors"] == 0 and result.soak["rss_before_mib"] > 0
    json.dumps(result.to_dict())  # what --out writes
    text = serving_markdown(result)
    assert "EdgeClient over loopback, int8" in text and "Dynamic batching at 16 clients" in text
    assert "Server CPU per request" in text


def test_runtimes_are_measured_side_by_side_against_real_servers(make_onnx_bundle, tiny_data):
    bundle, deployed = make_onnx_bundle()
    with torch.no_grad():
        bodies = [encode(deployed.split.edge(tiny_data.test.images[i : i + 1])) for i in range(4)]
    measured = []

    def measure(server, clients):
        measured.append((server.command[server.command.index("--runtime") + 1], clients))
        summary = run_load(server.url, bodies, concurrency=clients, requests=20).summary()
        return summary | {"server_cpu_us_per_request": 100.0, "server_cores_busy": 0.5}

    rows = compare_runtimes(
        bundle, ["torch", "onnx"], extra=["--no-auth"], concurrency=(1, 3), rounds=2, measure=measure
    )
    # the runs alternate, round by round, so a drifting machine weighs on both runtimes alike
    assert measured == [("torch", 1), ("onnx", 1), ("torch", 3), ("onnx", 3)] * 2
    assert [(row["runtime"], row["concurrency"]) for row in rows] == [
        ("torch", 1),
        ("torch", 3),
        ("onnx", 1),
        ("onnx", 3),
    ]
    assert all(row["errors"] == 0 and row["requests"] == 40 and row["rounds"] == 2 for row in rows)
    assert all(row["throughput_min"] <= row["throughput"] <= row["throughput_max"] for row in rows)
    table = runtimes_markdown(rows)
    assert "| clients | torch p50 ms | onnx p50 ms | p50 onnx/torch |" in table
    assert len(table.splitlines()) == 4  # header, rule, one line per concurrency


def test_an_unknown_runtime_is_refused_before_anything_is_served(tmp_path, tiny_data):
    settings = ServeBenchSettings(runtimes=("torch", "tensorrt"))
    with pytest.raises(ConfigError, match=r"\['tensorrt'\] given; choose among torch, onnx"):
        benchmark_serving(tmp_path, tiny_data.test.images, settings=settings, progress=False)
