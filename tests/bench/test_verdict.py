"""The summary's plain-words sentence: each clause only where its measure exists; the floor where reached."""

from dataclasses import replace

from splitveil.bench.frontier import FrontierPoint
from splitveil.bench.verdict import at_floor, leakage_sentence

LEAKY = FrontierPoint(
    cut="relu22", cut_index=2, defense="none", strength=0.0, accuracy=0.9, max_ssim=0.9,
    strongest_attack="inverse-network", mi=None, edge_flops=1, edge_params=1, feature_bytes=4, attacks=2,
    oracle_ssim=0.55, excess_ssim=0.35, reid_top1=0.87, reid_top5=0.95, reid_candidates=100,
)  # fmt: skip
NO_REID = replace(LEAKY, reid_top1=None, reid_top5=None, reid_candidates=None)
NO_ORACLE = replace(LEAKY, oracle_ssim=None, excess_ssim=None)


def test_reid_and_oracle_both_speak():
    assert leakage_sentence(LEAKY) == (
        "At relu22 the cloud re-identifies 87% of inputs among 100 look-alikes (chance 1%), and its best attack "
        "(inverse-network, SSIM 0.90) stands 0.35 above what the answer alone gives (output oracle 0.55)."
    )


def test_without_reid_the_reid_clause_is_left_out():
    assert leakage_sentence(NO_REID) == (
        "At relu22 the cloud's best attack (inverse-network, SSIM 0.90) stands 0.35 above what the answer "
        "alone gives (output oracle 0.55)."
    )


def test_without_an_oracle_there_is_no_floor_clause():
    sentence = leakage_sentence(NO_ORACLE)
    assert sentence == (
        "At relu22 the cloud re-identifies 87% of inputs among 100 look-alikes (chance 1%), and its best attack "
        "(inverse-network) reconstructs with SSIM 0.90."
    )
    assert "oracle" not in sentence and not at_floor(replace(NO_ORACLE, reid_top1=0.0))
    bare = replace(NO_ORACLE, reid_top1=None, reid_candidates=None, max_ssim=0.2)
    assert (
        leakage_sentence(bare)
        == "At relu22 the cloud's best attack (inverse-network) reconstructs with SSIM 0.20 (unrecognizable)."
    )


def test_at_the_floor_within_the_excess_margin_and_twice_chance():
    floor = replace(LEAKY, defense="noise", strength=4.0, max_ssim=0.56, excess_ssim=0.01, reid_top1=0.02)
    assert at_floor(floor)
    assert leakage_sentence(floor) == (
        "At relu22 with noise 4 the cloud re-identifies 2% of inputs among 100 look-alikes (chance 1%), and its "
        "best attack (inverse-network, SSIM 0.56) stands 0.01 above what the answer alone gives (output oracle "
        "0.55); it leaks no more than the answer: at the floor."
    )
    level = replace(floor, max_ssim=0.55, excess_ssim=0.001)
    assert "(inverse-network, SSIM 0.55) matches what the answer alone gives (output oracle 0.55)" in leakage_sentence(
        level
    )
    assert not at_floor(replace(floor, reid_top1=0.03))  # above twice chance
    assert not at_floor(replace(floor, excess_ssim=0.05))
    assert at_floor(replace(floor, reid_top1=None, reid_candidates=None))  # SSIM alone decides without reid


def test_below_the_oracle_says_below():
    below = replace(NO_REID, max_ssim=0.5, excess_ssim=-0.05)
    assert "stands 0.05 below what the answer alone gives" in leakage_sentence(below)
    assert leakage_sentence(below).endswith("at the floor.")
