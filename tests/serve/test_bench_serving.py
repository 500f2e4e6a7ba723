"""``benchmark_serving`` end to end on a tiny bundle: every part measured, and the figures consistent."""

import json

from splitveil.perf.serving import ServeBenchSettings, benchmark_serving, serving_markdown
from splitveil.serve.codec import CODECS


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
