import math

import pytest
import torch

from splitveil.config import TrainConfig, parse_spec
from splitveil.experiment import train_or_load
from splitveil.models import create_model
from splitveil.split import cut
from splitveil.train import TrainHook, evaluate, fit

FAST = TrainConfig(epochs=3, batch_size=16, lr=3e-3)


def _lenet():
    torch.manual_seed(0)
    return create_model("lenet", input_shape=(1, 12, 12), num_classes=3)


def test_training_learns_the_task(tiny_data):
    model = _lenet()
    before = evaluate(model, tiny_data.test)["accuracy"]
    result = fit(model, tiny_data, FAST, seed=0, progress=False)
    assert result.test_accuracy > max(before, 0.8)
    assert len(result.history) == 3
    assert result.best_val_accuracy == max(r.val_accuracy for r in result.history)


def test_same_seed_gives_identical_weights_and_leaves_global_rng_alone(tiny_data):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = _lenet(), _lenet()
    fit(a, tiny_data, FAST, seed=7, progress=False)
    fit(b, tiny_data, FAST, seed=7, progress=False)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    c = _lenet()
    fit(c, tiny_data, FAST, seed=8, progress=False)
    assert not torch.equal(a.state_dict()["conv1.weight"], c.state_dict()["conv1.weight"])
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), expected_next)


def test_loss_terms_see_the_feature_and_hooks_run(tiny_data):
    split = cut(_lenet(), at="pool1")
    seen_shapes, events = [], []

    def feature_penalty(batch, z, logits):
        seen_shapes.append(tuple(z.shape[1:]))
        return {"l1": 1e-3 * z.abs().mean()}

    class Recorder(TrainHook):
        def on_train_start(self, state):
            events.append("start")

        def after_step(self, state, batch, z):
            events.append(("step", state.last_losses.keys() >= {"task", "l1"}, z.requires_grad))

        def on_epoch_end(self, state, record):
            events.append(("epoch", record.epoch))

    fit(
        split,
        tiny_data,
        TrainConfig(epochs=1, batch_size=32),
        seed=0,
        loss_terms=[feature_penalty],
        hooks=[Recorder()],
        progress=False,
    )
    assert seen_shapes == [(6, 6, 6)] * 3
    assert events == ["start", ("step", True, False), ("step", True, False), ("step", True, False), ("epoch", 1)]


def test_patience_stops_early(tiny_data):
    config = TrainConfig(epochs=30, batch_size=32, lr=1e-2, patience=1)
    result = fit(_lenet(), tiny_data, config, seed=0, progress=False)
    assert len(result.history) < 30
    assert result.history[-1].epoch - result.best_epoch == 1


def test_second_identical_run_is_served_from_cache(tiny_data, cache):
    spec = parse_spec({"model": {"name": "lenet"}, "train": {"epochs": 1, "batch_size": 32}, "seed": 4})
    first = train_or_load(spec, cache=cache, data=tiny_data, progress=False)
    second = train_or_load(spec, cache=cache, data=tiny_data, progress=False)
    assert not first.from_cache and second.from_cache
    assert first.checkpoint == second.checkpoint
    for wa, wb in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb)
    assert second.metadata["seed"] == 4 and "torch" in second.metadata["versions"]
    other = parse_spec({"model": {"name": "lenet"}, "train": {"epochs": 1, "batch_size": 32}, "seed": 5})
    assert not train_or_load(other, cache=cache, data=tiny_data, progress=False).from_cache


def test_keep_last_keeps_the_last_epoch_and_ignores_patience(tiny_data):
    class Snapshot(TrainHook):
        def on_epoch_end(self, state, record):
            self.weights = {k: v.clone() for k, v in state.model.state_dict().items()}

    snapshot = Snapshot()
    config = TrainConfig(epochs=4, batch_size=32, lr=1e-2, patience=1)
    model = _lenet()
    result = fit(model, tiny_data, config, seed=0, hooks=[snapshot], keep="last", progress=False)
    assert len(result.history) == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshot.weights[name]), name


def test_cosine_schedule_anneals_the_rate_to_zero_over_the_epochs(tiny_data):
    class Rates(TrainHook):
        def __init__(self):
            self.rates = []

        def after_step(self, state, batch, z):
            self.rates.append(state.optimizer.param_groups[0]["lr"])

    runs = {}
    for schedule in ("constant", "cosine"):
        rates = Rates()
        config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, schedule=schedule)
        fit(_lenet(), tiny_data, config, seed=0, hooks=[rates], keep="last", progress=False)
        runs[schedule] = rates.rates
    assert set(runs["constant"]) == {1e-2}
    cosine = runs["cosine"]
    steps = len(cosine)  # the hook reads the rate after the step's update: step i + 1 of `steps`
    expected = [0.5e-2 * (1 + math.cos(math.pi * (i + 1) / steps)) for i in range(steps)]
    assert cosine == pytest.approx(expected, abs=1e-9) and cosine[-1] == pytest.approx(0, abs=1e-12)


def test_every_train_setting_is_in_the_cache_key_at_its_value(tiny_data):
    from splitveil.config import ExperimentSpec
    from splitveil.experiment import cache_key

    def key(**train: object) -> str:
        return cache_key(ExperimentSpec.model_validate({"train": {"epochs": 1, **train}}), tiny_data)

    assert key(schedule="constant") == key() != key(schedule="cosine")
    assert key(weight_decay=0.0) == key() != key(weight_decay=0.1)


def test_warm_up_ramps_loss_terms_from_zero_to_full_weight_over_its_steps(tiny_data):
    from splitveil.train import WarmUp, steps_per_epoch

    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3)
    warmup = WarmUp(steps_per_epoch(tiny_data, config))  # one epoch of warm-up, then full weight
    weights = []

    def constant_term(batch, z, logits):
        return {"one": torch.ones(())}

    def record(batch, z, logits):
        weights.append(float(warmup.scaled(constant_term)(batch, z, logits)["one"]))
        return {}

    fit(_lenet(), tiny_data, config, loss_terms=[record], hooks=[warmup], seed=0, progress=False)
    steps = warmup.steps
    assert weights[0] == 0.0 and weights[steps // 2] == pytest.approx((steps // 2) / steps)
    assert all(a < b for a, b in zip(weights[:steps], weights[1 : steps + 1], strict=True))
    assert set(weights[steps:]) == {1.0} and len(weights) == 2 * steps


def test_a_delayed_warm_up_holds_the_terms_at_zero_then_ramps(tiny_data):
    from splitveil.train import WarmUp, steps_per_epoch

    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3)
    per_epoch = steps_per_epoch(tiny_data, config)
    warmup = WarmUp(per_epoch, delay=per_epoch)  # one epoch of the task alone, one of ramp, one at full weight
    weights = []

    def record(batch, z, logits):
        weights.append(float(warmup.scaled(lambda *_: {"one": torch.ones(())})(batch, z, logits)["one"]))
        return {}

    fit(_lenet(), tiny_data, config, loss_terms=[record], hooks=[warmup], seed=0, progress=False)
    assert set(weights[:per_epoch]) == {0.0} and len(weights) == 3 * per_epoch
    ramp = weights[per_epoch : 2 * per_epoch]
    assert ramp[0] == 0.0 and all(a < b for a, b in zip(ramp, ramp[1:], strict=False))
    assert set(weights[2 * per_epoch :]) == {1.0}


def test_a_delayed_warm_up_keeps_the_model_s_noise_silent_until_the_terms_switch_on(tiny_data):
    from splitveil.blocks.noise_source import SILENT, draws_noise
    from splitveil.defenses import create_defense
    from splitveil.train import WarmUp, steps_per_epoch

    split = create_defense("gaussian-noise", strength=1.0).apply(cut(_lenet(), at="pool1"))
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3)
    per_epoch = steps_per_epoch(tiny_data, config)
    warmup = WarmUp(0, delay=per_epoch, quiet=split)
    sources = []

    def record(batch, z, logits):
        sources.append({m.noise_source for m in split.modules() if draws_noise(m)})
        return {}

    fit(split, tiny_data, config, loss_terms=[record], hooks=[warmup], seed=0, progress=False)
    assert sources[:per_epoch] == [{SILENT}] * per_epoch
    assert sources[per_epoch:] == [{None}] * per_epoch  # the global stream again, as before training


def test_distillation_is_zero_on_the_teacher_s_own_logits_and_trains_only_the_student():
    from splitveil.train import Batch, distillation

    teacher, student = _lenet(), _lenet()
    x = torch.rand(6, 1, 12, 12)
    term = distillation(teacher, weight=2.0, temperature=3.0)
    with torch.no_grad():
        same = term(Batch(x, torch.zeros(6, dtype=torch.long)), None, teacher(x))["distill"]
    assert abs(float(same)) < 1e-6
    loss = term(Batch(x, torch.zeros(6, dtype=torch.long)), None, student(x) * 5)["distill"]
    assert float(loss) > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_two_loss_terms_of_one_name_are_refused_instead_of_one_silently_dropping(tiny_data):
    def term(batch, z, logits):
        return {"same": logits.sum() * 0}

    with pytest.raises(ValueError, match="two loss terms are both named 'same'"):
        fit(_lenet(), tiny_data, TrainConfig(epochs=1, batch_size=16), loss_terms=[term, term], seed=0, progress=False)
