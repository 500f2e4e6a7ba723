"""Ranking and wording of the tuner's choice, on hand-made trials."""

from splitveil.tune.recommend import no_feasible_trial, privacy_rank, rank_measured

from .conftest import make_measured


def _trial(number: int, accuracy: float, reid: float, excess: float, drop: float):
    return make_measured(number, accuracy, reid, excess, drop=drop)


def test_privacy_comes_first_then_excess_then_accuracy():
    trials = [_trial(0, 0.90, 0.50, 0.10, 1), _trial(1, 0.85, 0.20, 0.30, 6), _trial(2, 0.91, 0.20, 0.30, 0.5)]
    assert [t.number for t in rank_measured(trials)] == [2, 1, 0]
    assert privacy_rank(None, None, 0.1, 0.99) > privacy_rank(1.0, 1.0, 1.0, 0.0)  # unmeasured counts as worst


def test_no_trial_in_budget_is_one_line_naming_the_closest():
    trials = [_trial(0, 0.80, 0.1, 0.0, 11.2), _trial(1, 0.86, 0.4, 0.1, 5.2), _trial(2, 0.70, 0.0, 0.0, 21.2)]
    error = no_feasible_trial(trials, max_drop=3.0, base_accuracy=0.912)
    message = str(error)
    assert "\n" not in message
    assert "within 3 points of the undefended 91.20%" in message
    assert "the closest is trial 1, relu22 bounded-noise 0.5 at 86.00% (-5.20 points" in message


def test_the_page_escapes_what_the_spec_and_the_study_wrote(tmp_path):
    from splitveil.tune.report import StudyOutcome, write_outcome

    trials = [_trial(0, 0.90, 0.5, 0.1, 1)]
    outcome = StudyOutcome(
        "he-cnn", 0.912, 3.0, trials, [0], [], None, None, no_recommendation="<b>not verified</b> & so on"
    )
    page = write_outcome(tmp_path, outcome).read_text()
    assert "&lt;b&gt;not verified&lt;/b&gt; &amp; so on" in page and "<b>not verified" not in page
