"""The cell graph: every (cut, variant, attack) once, dependencies explicit, fingerprints that notice changes."""

from splitveil.bench.cells import EVALUATOR_ID, TRAIN_ID, expand_cells
from splitveil.config import parse_spec

SPEC = {
    "model": {"name": "he-cnn"},
    "attacks": [{"name": "rmle", "options": {"steps": 10}}, {"name": "inverse-network"}],
    "defenses": [{"name": "gaussian-noise", "strengths": [0, 0.5, 1.0]}, {"name": "nopeek", "strengths": [2.0]}],
}


def _cells(spec=SPEC, cuts=("conv11", "relu22")):
    return expand_cells(parse_spec(spec), list(cuts))


def test_one_deploy_cell_per_variant_and_one_attack_cell_per_attack():
    cells = _cells()
    kinds = [cell.kind for cell in cells]
    variants = 1 + 2 + 1  # none, noise 0.5 and 1.0 (strength 0 is the undefended cell), nopeek 2
    assert kinds.count("train") == 1 and kinds.count("evaluator") == 1
    assert kinds.count("deploy") == 2 * variants
    assert kinds.count("attack") == 2 * variants * 2
    assert len({cell.id for cell in cells}) == len(cells)


def test_dependencies_come_first_and_share_the_trained_model():
    cells = _cells()
    position = {cell.id: index for index, cell in enumerate(cells)}
    for cell in cells:
        assert all(position[dep] < position[cell.id] for dep in cell.deps)
    deploys = [cell for cell in cells if cell.kind == "deploy"]
    assert all(cell.deps == (TRAIN_ID,) for cell in deploys)
    for attack in (cell for cell in cells if cell.kind == "attack"):
        assert EVALUATOR_ID in attack.deps
        (deploy,) = [dep for dep in attack.deps if dep.startswith("deploy/")]
        assert deploy == f"deploy/{attack.cut}/{attack.defense}/{attack.strength:g}"


def test_fingerprints_change_with_exactly_the_settings_that_shape_a_cell():
    before = {cell.id: cell.fingerprint for cell in _cells()}
    changed_attack = {**SPEC, "attacks": [{"name": "rmle", "options": {"steps": 20}}, {"name": "inverse-network"}]}
    after = {cell.id: cell.fingerprint for cell in _cells(changed_attack)}
    differ = {cell_id for cell_id in before if before[cell_id] != after[cell_id]}
    assert differ and all(cell_id.startswith("attack/") and "rmle" in cell_id for cell_id in differ)
    retrained = {cell.id: cell.fingerprint for cell in _cells({**SPEC, "train": {"epochs": 2}})}
    assert all(before[cell_id] != retrained[cell_id] for cell_id in before)


def test_no_evaluator_cell_when_disabled():
    cells = _cells({**SPEC, "audit": {"evaluator": {"enabled": False}}})
    assert EVALUATOR_ID not in {cell.id for cell in cells}
    assert all(EVALUATOR_ID not in cell.deps for cell in cells)
