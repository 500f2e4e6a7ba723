"""Salt codes: decoding inverts salting for every salt and class; the keyed table is the key's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from splitveil.salt import SaltCode, latin_code, permutation_code, shift_code

CODES = {
    "shift": lambda: shift_code(10),
    "permutation": lambda: permutation_code(10, num_salts=16, key="client secret"),
    "latin": lambda: latin_code(10, num_salts=20, key="client secret"),
}


def best_guess_from_argmax(code: SaltCode) -> float:
    """The accuracy of the best label guess from the salted class alone, salt and label uniform.

    Brute force over the table: for each salted class, guess the label that reaches it most often.
    """
    reaches = torch.zeros(code.num_classes, code.num_classes)  # [salted class, label]
    for salt in range(code.num_salts):
        for label in range(code.num_classes):
            reaches[code.table[salt, label], label] += 1
    return float(reaches.max(dim=1).values.sum()) / (code.num_salts * code.num_classes)


@pytest.mark.parametrize("name", CODES)
def test_decoding_inverts_salting_for_every_salt_and_class(name: str) -> None:
    code = CODES[name]()
    salts = torch.arange(code.num_salts).repeat_interleave(code.num_classes)
    labels = torch.arange(code.num_classes).repeat(code.num_salts)
    salted = code.encode_labels(labels, salts)
    assert torch.equal(code.decode_labels(salted, salts), labels)
    # Each salt relabels the classes one-to-one.
    for salt in range(code.num_salts):
        assert sorted(code.table[salt].tolist()) == list(range(code.num_classes))


@pytest.mark.parametrize("name", CODES)
def test_decoded_logits_put_each_class_where_the_salt_sent_it(name: str) -> None:
    code = CODES[name]()
    salt = torch.randint(code.num_salts, (32,), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(32, code.num_classes, generator=torch.Generator().manual_seed(1))
    decoded = code.decode_logits(logits, salt)
    assert torch.equal(decoded.argmax(dim=1), code.decode_labels(logits.argmax(dim=1), salt))


@pytest.mark.parametrize("name", CODES)
def test_training_on_decoded_logits_is_training_on_salted_targets(name: str) -> None:
    code = CODES[name]()
    salt = torch.randint(code.num_salts, (16,), generator=torch.Generator().manual_seed(2))
    labels = torch.randint(code.num_classes, (16,), generator=torch.Generator().manual_seed(3))
    logits = torch.randn(16, code.num_classes, requires_grad=True)
    decoded_loss = F.cross_entropy(code.decode_logits(logits, salt), labels)
    salted_loss = F.cross_entropy(logits, code.encode_labels(labels, salt))
    torch.testing.assert_close(decoded_loss, salted_loss)
    (grad_decoded,) = torch.autograd.grad(decoded_loss, logits)
    (grad_salted,) = torch.autograd.grad(salted_loss, logits)
    torch.testing.assert_close(grad_decoded, grad_salted)


def test_the_shift_is_the_papers_cyclic_shift() -> None:
    code = shift_code(5)
    for salt in range(5):
        for label in range(5):
            assert code.table[salt, label] == (label + salt) % 5


@pytest.mark.parametrize("keyed_code", [permutation_code, latin_code], ids=["permutation", "latin"])
def test_a_keyed_table_comes_from_the_key_alone_and_is_not_a_shift(keyed_code) -> None:
    same = keyed_code(10, num_salts=10, key=7), keyed_code(10, num_salts=10, key=7)
    other = keyed_code(10, num_salts=10, key=8)
    assert torch.equal(same[0].table, same[1].table)
    assert not torch.equal(same[0].table, other.table)
    # The key scrambles the rows: they are not all cyclic shifts of the first one.
    shifts = {tuple(((same[0].table[0] + s) % 10).tolist()) for s in range(10)}
    assert any(tuple(row.tolist()) not in shifts for row in same[0].table[1:])


@pytest.mark.parametrize("num_salts", [10, 30])
def test_the_latin_code_sends_each_class_to_every_index_once_per_block(num_salts: int) -> None:
    code = latin_code(10, num_salts=num_salts, key=3)
    for block in code.table.split(10):
        for label in range(10):
            assert sorted(block[:, label].tolist()) == list(range(10))


@pytest.mark.parametrize("name", ["shift", "latin"])
def test_under_a_latin_square_the_argmax_alone_is_chance(name: str) -> None:
    assert best_guess_from_argmax(CODES[name]()) == pytest.approx(0.1)


def test_independent_rows_let_the_argmax_alone_beat_chance() -> None:
    # Why latin is the default: the same ten salts as independent permutations leak the label.
    assert best_guess_from_argmax(permutation_code(10, num_salts=10, key=0)) > 0.2


def test_a_latin_code_needs_a_multiple_of_k_salts() -> None:
    with pytest.raises(ValueError, match="multiple of K=10"):
        latin_code(10, num_salts=15, key=0)


def test_the_table_is_not_saved_with_the_weights() -> None:
    assert permutation_code(10, num_salts=4, key=1).state_dict() == {}


@pytest.mark.parametrize(
    "table", [[[0, 0, 1]], [[0, 1, 3]], [[0]], [0, 1, 2]], ids=["repeat", "out-of-range", "one-class", "1-d"]
)
def test_a_table_that_is_not_a_permutation_is_rejected(table: list) -> None:
    with pytest.raises(ValueError):
        SaltCode(torch.tensor(table), scheme="custom")


def test_logits_of_the_wrong_shape_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        shift_code(10).decode_logits(torch.zeros(2, 9), torch.zeros(2, dtype=torch.long))


def test_the_keyed_tables_are_pinned():
    # The tables are not saved with the weights: a checkpoint trained under a table decodes only
    # while the key still derives the same one. These are the tables the cached models use.
    assert permutation_code(10, num_salts=2, key=0).table.tolist() == [
        [8, 7, 9, 6, 3, 4, 1, 0, 5, 2],
        [7, 6, 1, 5, 2, 4, 3, 8, 9, 0],
    ]
    assert latin_code(10, num_salts=10, key=0).table[:2].tolist() == [
        [6, 7, 9, 4, 5, 8, 1, 2, 3, 0],
        [2, 4, 1, 6, 0, 7, 3, 9, 5, 8],
    ]
