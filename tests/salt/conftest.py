"""The salt tests run tiny tensors on one thread (see the root conftest's ``one_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Tiny models train here; one thread is faster and deterministic."""
