"""The search engine's bookkeeping on an in-memory Optuna study: what counts towards the total after a kill."""

import optuna
from optuna.trial import TrialState

from splitveil.tune.engine import counted_trials, requeue_interrupted


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def test_an_interrupted_trial_is_asked_again_with_its_parameters_and_counts_once():
    study = _study()
    finished = study.ask()
    finished.suggest_float("strength", 0.1, 2.0)
    study.tell(finished, [0.9, 0.5])
    killed = study.ask()
    strength = killed.suggest_float("strength", 0.1, 2.0)
    killed.set_user_attr("error", "a cell failed")  # set just before the kill: the trial never got its FAIL
    assert counted_trials(study) == 1

    assert requeue_interrupted(study) == 1
    assert study.trials[killed.number].state == TrialState.FAIL
    assert counted_trials(study) == 1  # the failed original is resumed by its copy: it does not count
    copy = study.ask()
    assert copy.user_attrs["resumes"] == killed.number
    assert copy.suggest_float("strength", 0.1, 2.0) == strength
    study.tell(copy, [0.8, 0.4])
    assert counted_trials(study) == 2
    assert requeue_interrupted(study) == 0


def test_a_trial_failed_by_an_error_counts_and_one_failed_without_a_reason_does_not():
    study = _study()
    errored = study.ask()
    errored.set_user_attr("error", "deploy/relu22/x: out of memory")
    study.tell(errored, state=TrialState.FAIL)
    study.tell(study.ask(), state=TrialState.FAIL)  # e.g. a kill before the requeue had told it
    assert counted_trials(study) == 1
