"""Privacy index (PI): the privacy a defense buys, discounted by the utility it costs, in [0, 1].

Gao et al. (PriPro, CCGrid 2021) pair privacy accuracy (PA, :func:`~splitveil.metrics.privacy_accuracy`:
how often an independent classifier recognises the attacker's reconstructions) with a privacy index
of privacy achieved per unit of utility lost. Their formula was not available to us; ours, with
``chance`` the accuracy of guessing (``1/K`` for K balanced classes)::

    G  = clip((PA_undefended − PA_defended) / (PA_undefended − chance), 0, 1)     privacy gained
    U  = clip((acc_defended − chance) / (acc_undefended − chance), 0, 1)          utility kept
    PI = G · U

``G`` is the share of the reconstructions' above-chance recognisability that the defense removes
(1: no better than guessing); ``U`` the share of the model's above-chance accuracy it keeps.
So PI is 0 without a defense (``G = 0``), 0 for a defense that costs accuracy and gains no privacy,
0 for one that destroys the model (``U = 0``), and 1 exactly for perfect privacy at no accuracy
cost; half the privacy at no cost and full privacy at half the utility both score 0.5.

Why a product, not a ratio ``G / utility lost``: a ratio is infinite in the best case (no loss),
needs an arbitrary floor there, and then ranks a defense with a sliver of privacy and no loss
above one with full privacy at a 1% loss; the product is bounded, increases in both privacy and
utility, and needs no floor. Edge cases: when the undefended reconstructions are already no better
than chance (``PA_undefended ≤ chance``) there is no privacy left to gain and PI is 0; a defense
that raises PA or accuracy is clipped (no negative gain, no utility above 1).
"""

from __future__ import annotations

import math


def privacy_index(
    *,
    pa_defended: float,
    pa_undefended: float,
    accuracy_defended: float,
    accuracy_undefended: float,
    chance: float,
) -> float:
    """``PI = G · U`` in [0, 1] (see the module docstring); higher is a better privacy/utility trade-off.

    PAs are privacy accuracies of the same attack and evaluation classifier, without and with the
    defense; accuracies are the target model's test accuracies (with the defense as deployed).

    Example:
        >>> privacy_index(pa_defended=0.1, pa_undefended=0.9, accuracy_defended=0.9,
        ...               accuracy_undefended=0.9, chance=0.1)  # perfect privacy, no accuracy lost
        1.0
        >>> privacy_index(pa_defended=0.5, pa_undefended=0.9, accuracy_defended=0.9,
        ...               accuracy_undefended=0.9, chance=0.1)  # half the privacy, no accuracy lost
        0.5

    Raises:
        ValueError: a value is not a fraction in [0, 1], ``chance`` is not in (0, 1), or the
            undefended model is no better than chance (then there is no utility to keep).
    """
    values = {
        "pa_defended": pa_defended,
        "pa_undefended": pa_undefended,
        "accuracy_defended": accuracy_defended,
        "accuracy_undefended": accuracy_undefended,
    }
    for name, value in values.items():
        if not _fraction(value):
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    if not _fraction(chance) or not 0 < chance < 1:
        raise ValueError(f"chance must be in (0, 1), e.g. 1/K for K balanced classes, got {chance!r}")
    if accuracy_undefended <= chance:
        raise ValueError(
            f"the undefended model's accuracy {accuracy_undefended} is no better than chance {chance}: "
            "there is no utility to keep; train the target model first"
        )
    utility_kept = _clip((accuracy_defended - chance) / (accuracy_undefended - chance))
    if pa_undefended <= chance:
        return 0.0  # the attack already recovers nothing recognisable: no privacy left to gain
    privacy_gained = _clip((pa_undefended - pa_defended) / (pa_undefended - chance))
    return privacy_gained * utility_kept


def _fraction(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(value)
        and 0.0 <= value <= 1.0
    )


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)
