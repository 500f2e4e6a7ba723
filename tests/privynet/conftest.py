"""PrivyNet tests: tiny models on one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Tiny tensors: one thread."""
