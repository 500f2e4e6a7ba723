"""Fixtures of the metrics tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Every test here trains or optimises tiny tensors; see the root conftest's ``one_thread``."""
