"""``splitveil tune``: the most private deployment within the user's accuracy and device budgets.

An Optuna study over cuts, defenses (and stacks), strengths, loss weights and training schedules,
multi-objective (accuracy against the strongest attack's re-identification and excess SSIM), whose
trials are bench cells on the local pool or Ray; the Pareto points are re-measured by the full
attack suite with fresh seeds, and the chosen one is exported as a serving bundle.
"""

from splitveil.tune.run import TuneResult, run_tune
from splitveil.tune.spec import TuneSpec, load_tune_spec

__all__ = ["TuneResult", "TuneSpec", "load_tune_spec", "run_tune"]
