"""The pending-body budget: what it holds, what it refuses, and the budget a server gets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitveil.errors import ConfigError
from splitveil.serve.pending_bodies import DEFAULT_PENDING_BYTES, PendingBodies


def test_reserve_holds_what_fits_and_refuses_the_rest_without_holding_it():
    budget = PendingBodies(100)
    assert budget.reserve(60) and budget.held == 60
    assert not budget.reserve(41) and budget.held == 60  # a refused reservation holds nothing
    assert budget.fits(40) and budget.reserve(40) and budget.held == 100
    budget.release(100)
    assert budget.held == 0


def test_releasing_more_than_is_held_is_a_bug_caught_at_once():
    budget = PendingBodies(10)
    budget.reserve(5)
    with pytest.raises(ValueError, match="releasing 6 bytes"):
        budget.release(6)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=60))
def test_held_never_exceeds_capacity_nor_goes_negative(operations):
    budget, reserved = PendingBodies(120), []
    for is_reserve, size in operations:
        if is_reserve:
            if budget.reserve(size):
                reserved.append(size)
        elif reserved:
            budget.release(reserved.pop())
        assert 0 <= budget.held <= budget.capacity
        assert budget.held == sum(reserved)


def test_a_server_budget_defaults_to_256_mib_or_two_full_requests():
    assert PendingBodies.for_server(None, 1_000).capacity == DEFAULT_PENDING_BYTES
    assert PendingBodies.for_server(None, DEFAULT_PENDING_BYTES).capacity == 2 * DEFAULT_PENDING_BYTES
    assert PendingBodies.for_server(5_000, 1_000).capacity == 5_000


def test_a_budget_below_one_full_request_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="cannot hold one full request.*--max-request-samples"):
        PendingBodies.for_server(999, 1_000)
    with pytest.raises(ConfigError, match=">= 1 byte"):
        PendingBodies(0)
