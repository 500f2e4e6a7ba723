"""Bundles: each half rebuilds on its own and together they compute the deployed split."""

import json

import pytest
import torch

from splitveil.config import DefenseSpec
from splitveil.errors import CheckpointError
from splitveil.seeding import seeded
from splitveil.serve import load_half


@pytest.mark.parametrize(
    "defense",
    [
        None,
        DefenseSpec(name="nopeek", strengths=[1.0], epochs=1),
        DefenseSpec(name="siftfunnel", strengths=[1.0], epochs=1),
        DefenseSpec(  # a stack whose PATROL layer prunes: its record is replayed when the bundle loads
            name="stack",
            strengths=[1.0],
            epochs=1,
            options={
                "layers": [
                    {"name": "patrol", "options": {"budget_cut": "relu12", "finetune_epochs": 1}},
                    {"name": "nopeek", "strength": 0.5},
                ]
            },
        ),
    ],
    ids=["none", "nopeek", "siftfunnel", "stack"],
)
def test_halves_loaded_apart_compute_the_deployed_split(make_bundle, tiny_data, defense):
    out, deployed = make_bundle(defense, 1.0 if defense else 0.0)
    edge, cloud = load_half(out, "edge").module, load_half(out, "cloud").module
    x = tiny_data.test.images[:8]
    with torch.no_grad():
        assert torch.allclose(cloud(edge(x)), deployed.split(x), atol=1e-6)


def test_a_stack_records_its_pruning_layer_s_change_and_the_bundle_replays_it(make_bundle):
    stack = DefenseSpec(
        name="stack",
        strengths=[1.0],
        epochs=1,
        options={"layers": [{"name": "patrol", "options": {"budget_cut": "relu12", "finetune_epochs": 1}}]},
    )
    out, deployed = make_bundle(stack, 1.0)
    pruned = deployed.finalize_record["layers"][0]
    assert pruned and json.loads((out / "edge" / "meta.json").read_text())["finalize"]["layers"][0] == pruned
    edge = load_half(out, "edge").module
    assert sum(p.numel() for p in edge.parameters()) == sum(p.numel() for p in deployed.split.edge.parameters())


SECRET = "client-secret-42"
SALTED_ALONE = DefenseSpec(name="salted", strengths=[0.5], options={"key": SECRET}, epochs=1)
SALTED_LAST_IN_A_STACK = DefenseSpec(  # input privacy from the noise, output privacy from the salt
    name="stack",
    strengths=[1.0],
    epochs=1,
    options={
        "layers": [
            {"name": "bounded-noise", "strength": 0.2},
            {"name": "salted", "strength": 0.5, "options": {"key": SECRET}},
        ]
    },
)


@pytest.mark.parametrize(
    ("salted", "edge_key"),
    [
        (SALTED_ALONE, lambda defense: defense["options"]["key"]),
        (SALTED_LAST_IN_A_STACK, lambda defense: defense["options"]["layers"][1]["options"]["key"]),
    ],
    ids=["alone", "stacked"],
)
def test_salt_key_stays_in_the_edge_half(make_bundle, tiny_data, salted, edge_key):
    out, deployed = make_bundle(salted, salted.strengths[0])
    cloud_files = b"".join(path.read_bytes() for path in (out / "cloud").iterdir())
    assert SECRET.encode() not in cloud_files
    assert edge_key(json.loads((out / "edge" / "meta.json").read_text())["defense"]) == SECRET
    edge, cloud = load_half(out, "edge").module, load_half(out, "cloud").module
    x, salt = tiny_data.test.images[:8], torch.arange(8) % 3
    with torch.no_grad(), seeded(0):  # the stack's noise: the same draw on both sides
        expected = deployed.split.salted_forward(x, salt)[1]
    with torch.no_grad(), seeded(0):
        assert torch.allclose(cloud(edge(x, salt)), expected, atol=1e-6)


def test_wrong_half_and_foreign_directories_are_named(bundle, tmp_path):
    with pytest.raises(CheckpointError, match="holds the edge half"):
        load_half(bundle / "edge", "cloud")
    with pytest.raises(CheckpointError, match="no checkpoint metadata"):
        load_half(tmp_path, "cloud")


def test_a_bundle_records_resolved_options_and_one_of_another_format_is_refused(make_bundle):
    salted = DefenseSpec(name="salted", strengths=[0.5], options={"key": "k"}, epochs=1)
    out, _ = make_bundle(salted, 0.5)
    meta_file = out / "edge" / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["defense"]["options"]["scheme"] == "latin"  # the default it was built with, written down
    assert load_half(out, "edge").module.code.scheme == "latin"
    # A format-1 bundle wrote only the configured options, so a default changed since (the salted
    # scheme) would silently change what it means: it is refused, naming the fix.
    del meta["defense"]["options"]["scheme"]
    meta["bundle_format"] = 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bundle of format 1.*reads format 2: export it again"):
        load_half(out, "edge")
