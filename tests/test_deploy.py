"""Deployed splits of bench cells: inference-time defenses wrap, training defenses train once and are cached."""

import pytest
import torch

from splitveil.config import DefenseSpec, parse_spec
from splitveil.deploy import deploy
from splitveil.errors import ConfigError
from splitveil.experiment import train_or_load
from splitveil.train import WarmUp, steps_per_epoch

SPEC = parse_spec(
    {
        "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 16}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3},
    }
)


@pytest.fixture
def trained(tiny_data, cache):
    return train_or_load(SPEC, cache=cache, data=tiny_data, progress=False)


@pytest.fixture
def fit_calls(monkeypatch):
    """What deploy's last training call got: its config, hooks and loss terms (the training still runs)."""
    import splitveil.deploy as deploy_module
    from splitveil.train import fit as real_fit

    seen = {}

    def recording_fit(model, data, config, *, hooks=(), loss_terms=(), **options):
        seen["config"], seen["hooks"], seen["terms"] = config, list(hooks), list(loss_terms)
        return real_fit(model, data, config, hooks=hooks, loss_terms=loss_terms, **options)

    monkeypatch.setattr(deploy_module, "fit", recording_fit)
    return seen


def _edge_outputs(deployed, x):
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return deployed.split.edge(x), deployed.split(x)


def test_undefended_split_keeps_the_trained_accuracy(trained, cache):
    deployed = deploy(SPEC, trained, "relu22", cache=cache, progress=False)
    assert deployed.accuracy == pytest.approx(trained.test_accuracy)
    assert deployed.defense.describe()["defense"] == "none"


def test_inference_defense_wraps_without_training_and_is_measured_reproducibly(trained, cache, tiny_data):
    noise = DefenseSpec(name="gaussian-noise", strengths=[5.0])
    first = deploy(SPEC, trained, "relu22", noise, 5.0, cache=cache, progress=False)
    second = deploy(SPEC, trained, "relu22", noise, 5.0, cache=cache, progress=False)
    assert first.from_cache and first.accuracy == second.accuracy
    clean = deploy(SPEC, trained, "relu22", cache=cache, progress=False)
    x = tiny_data.test.images[:4]
    assert not torch.equal(_edge_outputs(first, x)[0], _edge_outputs(clean, x)[0])
    assert len(list(cache.checkpoints.iterdir())) == 1  # only the undefended model was trained


def test_training_defense_trains_once_then_loads_identical_weights(trained, cache, tiny_data):
    nopeek = DefenseSpec(name="nopeek", strengths=[1.0], epochs=1)
    first = deploy(SPEC, trained, "relu22", nopeek, 1.0, cache=cache, progress=False)
    second = deploy(SPEC, trained, "relu22", nopeek, 1.0, cache=cache, progress=False)
    assert not first.from_cache and second.from_cache
    x = tiny_data.test.images[:4]
    for a, b in zip(_edge_outputs(first, x), _edge_outputs(second, x), strict=True):
        assert torch.equal(a, b)
    assert first.accuracy == second.accuracy
    # The undefended weights were the starting point and are untouched.
    clean = deploy(SPEC, trained, "relu22", cache=cache, progress=False)
    assert not torch.equal(_edge_outputs(first, x)[0], _edge_outputs(clean, x)[0])
    assert clean.accuracy == pytest.approx(trained.test_accuracy)


def test_zero_strength_never_trains(trained, cache, tiny_data):
    nopeek = DefenseSpec(name="nopeek", strengths=[0.0, 1.0])
    deployed = deploy(SPEC, trained, "relu22", nopeek, 0.0, cache=cache, progress=False)
    clean = deploy(SPEC, trained, "relu22", cache=cache, progress=False)
    x = tiny_data.test.images[:4]
    assert torch.equal(_edge_outputs(deployed, x)[1], _edge_outputs(clean, x)[1])


def test_retrain_trains_an_inference_time_defense(trained, cache):
    noise = DefenseSpec(name="gaussian-noise", strengths=[0.5], retrain=True, epochs=1)
    assert not deploy(SPEC, trained, "relu22", noise, 0.5, cache=cache, progress=False).from_cache


def test_patrol_prunes_to_the_budget_and_reloads_the_pruned_structure(trained, cache, tiny_data):
    patrol = DefenseSpec(
        name="patrol", strengths=[1.0], epochs=1, options={"budget_cut": "pool1", "finetune_epochs": 1}
    )
    first = deploy(SPEC, trained, "relu22", patrol, 1.0, cache=cache, progress=False)
    second = deploy(SPEC, trained, "relu22", patrol, 1.0, cache=cache, progress=False)
    assert not first.from_cache and second.from_cache
    budget = deploy(SPEC, trained, "pool1", cache=cache, progress=False).split.profile((1, 12, 12)).edge_flops
    unpruned = deploy(SPEC, trained, "relu22", cache=cache, progress=False).split.profile((1, 12, 12)).edge_flops
    assert first.split.profile((1, 12, 12)).edge_flops <= budget < unpruned
    x = tiny_data.test.images[:4]
    for a, b in zip(_edge_outputs(first, x), _edge_outputs(second, x), strict=True):
        assert torch.equal(a, b)


def test_cached_only_refuses_to_train(tiny_data, cache):
    from splitveil.errors import CheckpointError
    from splitveil.experiment import train_or_load

    with pytest.raises(CheckpointError, match="not in the checkpoint cache.*train cell must run first"):
        train_or_load(SPEC, cache=cache, data=tiny_data, progress=False, cached_only=True)


def test_a_miss_in_a_cache_of_an_older_format_says_so(tiny_data, cache):
    from splitveil.checkpoint import save_checkpoint
    from splitveil.errors import CheckpointError
    from splitveil.experiment import train_or_load

    save_checkpoint(cache.path("written-by-format-1"), torch.nn.Linear(2, 2), {"cache_key": "old"})
    with pytest.raises(CheckpointError, match=r"Note: 1 checkpoint\(s\) .* another cache format .* not reused"):
        train_or_load(SPEC, cache=cache, data=tiny_data, progress=False, cached_only=True)


def test_a_defense_trains_on_its_own_schedule_with_its_terms_warmed_up(trained, cache, tiny_data, fit_calls):
    seen = fit_calls
    plain = DefenseSpec(name="nopeek", strengths=[1.0], epochs=2)
    tuned = DefenseSpec(name="nopeek", strengths=[1.0], epochs=2, lr=1e-3, schedule="cosine", warmup_epochs=1)
    first = deploy(SPEC, trained, "relu22", plain, 1.0, cache=cache, progress=False)
    assert seen["config"].lr == SPEC.train.lr and not any(isinstance(h, WarmUp) for h in seen["hooks"])
    second = deploy(SPEC, trained, "relu22", tuned, 1.0, cache=cache, progress=False)
    assert not second.from_cache  # its own checkpoint: the schedule is in the cache key
    assert (seen["config"].lr, seen["config"].schedule, seen["config"].epochs) == (1e-3, "cosine", 2)
    warmup = next(h for h in seen["hooks"] if isinstance(h, WarmUp))
    assert warmup.steps == steps_per_epoch(tiny_data, seen["config"]) and warmup.factor == 1.0
    assert first.accuracy != second.accuracy or not torch.equal(
        _edge_outputs(first, tiny_data.test.images[:4])[0], _edge_outputs(second, tiny_data.test.images[:4])[0]
    )


def test_a_warm_up_longer_than_the_training_is_refused_when_the_spec_loads():
    with pytest.raises(ConfigError, match="warmup_epochs=3 is longer than its 2 training epochs"):
        parse_spec({**SPEC.model_dump(), "defenses": [{"name": "nopeek", "strengths": [1], "warmup_epochs": 3}]})


def test_task_only_epochs_and_warm_up_together_must_fit_in_the_training():
    with pytest.raises(ConfigError, match="task_only_epochs=2 and warmup_epochs=1 add up to more than its 2"):
        parse_spec(
            {
                **SPEC.model_dump(),
                "defenses": [
                    {"name": "nopeek", "strengths": [1], "epochs": 2, "task_only_epochs": 2, "warmup_epochs": 1}
                ],
            }
        )


def test_a_spec_without_task_only_epochs_dumps_as_before_the_field_existed():
    # every run directory and cache fingerprint hashes this dump: a new field at its default must not move them
    assert "task_only_epochs" not in DefenseSpec(name="nopeek", strengths=[1.0]).model_dump(mode="json")
    delayed = DefenseSpec(name="nopeek", strengths=[1.0], epochs=2, task_only_epochs=1)
    assert DefenseSpec.model_validate(delayed.model_dump(mode="json")) == delayed


def test_task_only_epochs_delay_the_defense_s_terms_and_join_the_cache_key(trained, cache, tiny_data, fit_calls):
    seen = fit_calls
    plain = DefenseSpec(name="nopeek", strengths=[1.0], epochs=2)
    delayed = DefenseSpec(name="nopeek", strengths=[1.0], epochs=2, task_only_epochs=1)
    first = deploy(SPEC, trained, "relu22", plain, 1.0, cache=cache, progress=False)
    second = deploy(SPEC, trained, "relu22", delayed, 1.0, cache=cache, progress=False)
    assert not first.from_cache and not second.from_cache  # the delay is in the cache key
    warmup = next(h for h in seen["hooks"] if isinstance(h, WarmUp))
    assert (warmup.delay, warmup.steps) == (steps_per_epoch(tiny_data, seen["config"]), 0)
    assert warmup.factor == 1.0  # the terms were on for the second epoch


def test_distillation_from_the_undefended_model_joins_the_defense_s_training(trained, cache, tiny_data, monkeypatch):
    import splitveil.deploy as deploy_module
    from splitveil.train import Batch
    from splitveil.train import fit as real_fit

    names = []

    def recording_fit(model, data, config, *, loss_terms=(), **options):
        x = data.train.images[:4]
        z, logits = model.forward_with_features(x)
        for term in loss_terms:
            names.extend(term(Batch(x, data.train.labels[:4]), z, logits))
        return real_fit(model, data, config, loss_terms=loss_terms, **options)

    monkeypatch.setattr(deploy_module, "fit", recording_fit)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    taught = DefenseSpec(name="nopeek", strengths=[1.0], epochs=1, distill=0.5)
    deploy(SPEC, trained, "relu22", taught, 1.0, cache=cache, progress=False)
    assert names == ["nopeek", "distill"]
    assert all(torch.equal(before[k], v) for k, v in trained.model.state_dict().items())  # the teacher is untouched
