"""The search engine `splitveil tune` and `splitveil plan` share: an Optuna study stored in the run
directory, resumed after a kill, and run a batch of trials at a time.

What a trial *is* differs: a tuning trial is bench cells (:mod:`splitveil.tune.study`), a planning
trial is a PrivyNet topology trained and attacked (:mod:`splitveil.privynet.planner`). What they
share lives here:

- the study in ``OUT/study.db`` (SQLite), created or resumed, tagged with the identity of its
  search so a directory of another search is refused before anything is written over it;
- the resumption rules: a trial a killed run left running is failed and asked again with the same
  parameters, and it counts once;
- the loop: ask up to ``parallel`` trials, sample each, hand the batch to the caller's evaluation
  (which tells the study), until ``trials`` count.

Without a directory the study lives in memory (a plan from Python with no ``out``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from splitveil.errors import ConfigError

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.db"
#: The user attribute recording the identity of the search a study belongs to.
IDENTITY = "search"

Direction = Literal["minimize", "maximize"]
Point = TypeVar("Point")


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def refuse_another_search(out: Path | None, *, name: str, identity: str, advice: str) -> None:
    """Refuse ``out`` when its study was made for another search (``advice`` says what to do instead).

    Reads only, so call it before writing anything into ``out``.
    """
    if out is None or not (out / STUDY_FILE).exists():
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage_url(out))
    except KeyError:  # the file was created, the study not yet
        return
    recorded = study.user_attrs.get(IDENTITY)
    if recorded is not None and recorded != identity:
        raise ConfigError(f"{out} holds a study of another search space or set-up; {advice}")


def open_study(
    out: Path | None,
    *,
    name: str,
    directions: list[Direction],
    identity: str,
    sampler: Callable[[int], optuna.samplers.BaseSampler],
    seed: int,
) -> optuna.Study:
    """The study ``name`` in ``out/study.db`` (in memory without ``out``), created or resumed.

    :func:`refuse_another_search` has checked ``out``. ``sampler(seed)`` builds the sampler; its seed
    also counts the trials the study already has, so a resumed run draws new points where the spec's
    seed alone would replay the first run's start-up draws (the same points, measured again).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the callers report their own progress
    study = optuna.create_study(
        study_name=name,
        storage=None if out is None else storage_url(out),
        directions=directions,
        load_if_exists=True,
    )
    study.sampler = sampler(seed + len(study.trials))
    if IDENTITY not in study.user_attrs:
        study.set_user_attr(IDENTITY, identity)
    return study


def requeue_interrupted(study: optuna.Study) -> int:
    """Give each trial a killed run left running to a new trial with the same parameters; returns how many."""
    from optuna.trial import TrialState

    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in interrupted:
        # Failed first: a kill between the two steps then loses the copy (a new point is drawn
        # instead), where the other order would leave a copy queued and the original running.
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number})
    return len(interrupted)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards the study's total: finished ones, and those an error failed (a cell's,
    or the sampled point's), except a failure that a later trial resumes (it counts once, there)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    resumed = {trial.user_attrs.get("resumes") for trial in trials}
    return sum(
        1
        for trial in trials
        if trial.state == TrialState.COMPLETE
        or (trial.state == TrialState.FAIL and "error" in trial.user_attrs and trial.number not in resumed)
    )


def fail_trial(study: optuna.Study, trial: optuna.Trial, error: str) -> None:
    """Record why ``trial`` failed (it then counts towards the total) and tell the study."""
    from optuna.trial import TrialState

    trial.set_user_attr("error", error)
    study.tell(trial, state=TrialState.FAIL)


def run_trials(
    study: optuna.Study,
    *,
    trials: int,
    parallel: int,
    sample: Callable[[optuna.Trial], Point],
    evaluate: Callable[[list[tuple[optuna.Trial, Point]]], None],
    refused: Callable[[optuna.Trial, ConfigError], None],
) -> None:
    """Ask, sample and evaluate batches of up to ``parallel`` trials until ``trials`` count.

    ``sample`` turns a trial into a point; a :class:`ConfigError` there (a sampled value the point
    refuses) fails that trial through ``refused``, and the study goes on. ``evaluate`` measures a
    batch and tells the study each trial's result; an exception there stops the run with the batch
    left running, for the next run to resume.
    """
    while (done := counted_trials(study)) < trials:
        batch = []
        for trial in (study.ask() for _ in range(min(parallel, trials - done))):
            try:
                batch.append((trial, sample(trial)))
            except ConfigError as exc:
                fail_trial(study, trial, str(exc))
                refused(trial, exc)
        if batch:
            evaluate(batch)
