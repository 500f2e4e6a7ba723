"""Components registered from outside splitveil (a spec's ``plugins``) run end to end like built-in ones.

A toy defense and a toy attack live in ``tests/plugins/splitveil_toy_plugin.py``; nothing under
``src/`` names them. Every step runs in its own process, as a user's would (and so this process's
registries stay as they are): the bench with a worker process, the report, the export, a server that
trusts the plugin, and an edge client classifying through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from splitveil.config import parse_spec
from splitveil.errors import ConfigError
from splitveil.serve.process import ServerProcess

PLUGIN_DIR = Path(__file__).parent / "plugins"
PLUGIN = "splitveil_toy_plugin"
SPEC = {
    "plugins": [PLUGIN],
    "name": "toy-plugins",
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["relu22"],
    "attacks": [{"name": "toy-aux-mean"}],
    "defenses": [{"name": "toy-scale", "strengths": [2.0], "options": {"offset": 0.5}}],
    "audit": {"targets": 8, "grid_images": 4, "mine": {"samples": 128, "steps": 20}, "evaluator": {"epochs": 1}},
}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitveil.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)  # the server process started below inherits it
    return {**os.environ, "PYTHONPATH": path}


def test_a_spec_names_a_plugin_that_cannot_be_imported_in_one_line() -> None:
    with pytest.raises(ConfigError, match="plugin 'no_such_plugin_module' cannot be imported.*PYTHONPATH"):
        parse_spec({"plugins": ["no_such_plugin_module"]})
    with pytest.raises(ConfigError, match="not a module name"):
        parse_spec({"plugins": ["plugins/toy.py"]})


def test_a_spec_found_in_a_run_directory_never_imports_its_plugins() -> None:
    import sys

    assert "tabnanny" not in sys.modules  # a standard module nothing here imports
    with pytest.raises(ConfigError, match="this spec needs the plugin.s. tabnanny, which are not imported"):
        parse_spec({"plugins": ["tabnanny"]}, source="runs/x/spec.resolved.yaml", trust_plugins=False)
    assert "tabnanny" not in sys.modules


def test_a_toy_defense_and_attack_from_a_plugin_run_through_bench_report_export_and_serving(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    cache, out, bundle = tmp_path / "cache", tmp_path / "run", tmp_path / "bundle"

    # tmp_path holds no spaces, so each command line splits into its words
    ran = _cli(*f"bench run {spec} --out {out} --cache-dir {cache} --workers 1 --no-progress".split(), env=plugin_env)
    assert ran.returncode == 0, ran.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    toy = [row for row in rows if row["defense"] == "toy-scale"]
    assert {row["attack"] for row in rows} == {"toy-aux-mean"} and len(toy) == 1
    assert toy[0]["strength"] == 2.0 and 0.1 < toy[0]["accuracy"] <= 1 and -1 <= toy[0]["ssim"] <= 1
    assert "toy-scale" in (out / "report.html").read_text() and "toy-aux-mean" in (out / "report.html").read_text()

    exported = _cli(
        *f"export {spec} --cut relu22 --defense toy-scale --strength 2 --out {bundle} --cache-dir {cache}".split(),
        "--no-progress",
        env=plugin_env,
    )
    assert exported.returncode == 0, exported.stderr
    assert json.loads((bundle / "edge" / "meta.json").read_text())["plugins"] == [PLUGIN]

    untrusted = _cli(*f"infer {tmp_path}/x.npy --checkpoint {bundle} --url http://127.0.0.1:9".split(), env=plugin_env)
    assert untrusted.returncode == 2 and "needs the plugin(s) splitveil_toy_plugin" in untrusted.stderr

    with ServerProcess(bundle, extra=["--no-auth", "--plugin", PLUGIN]) as server:
        client = textwrap.dedent(f"""
            import torch, {PLUGIN}
            from splitveil.data import load_dataset
            from splitveil.serve import load_half
            from splitveil.serve.client import EdgeClient
            images = load_dataset("fashion-mnist", limit=256).test.images[:16]
            edge, cloud = load_half({str(bundle)!r}, "edge").module, load_half({str(bundle)!r}, "cloud").module
            assert any(isinstance(m, {PLUGIN}.Scale) and m.factor == 2.5 for m in edge.modules())
            with EdgeClient.from_bundle({str(bundle)!r}, {server.url!r}) as client:
                remote = client.logits(images)
            with torch.no_grad():
                local = cloud(edge(images))
            assert torch.allclose(remote, local, atol=1e-5), (remote - local).abs().max()
            print("served", len(remote))
        """)
        served = subprocess.run(
            [sys.executable, "-c", client], capture_output=True, text=True, env=plugin_env, timeout=300
        )
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "served 16"
