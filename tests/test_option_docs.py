"""The option tables in the docs are what the constructors declare (``python -m splitveil.option_docs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitveil.option_docs import options_table, render

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.parametrize("page", ["attacks.md", "defenses.md"])
def test_the_docs_option_tables_are_current(page: str) -> None:
    text = (DOCS / page).read_text()
    assert "<!-- options:" in text
    assert render(text) == text, f"docs/{page} is stale: run `python -m splitveil.option_docs`"


def test_a_table_gives_each_option_with_its_type_range_and_default_and_leaves_out_what_the_run_sets() -> None:
    attacks = options_table("attacks")
    assert "| `inverse-network` | `epochs` | int | >= 1 | `20` |" in attacks
    assert "| `inverse-network-noise` | `num_queries` | int | >= 1 | `4096` |" in attacks  # its own option
    assert "| `inverse-network-noise` | `loss` | `'mse'` or `'ssim'` |  | `'ssim'` |" in attacks  # and its parent's
    assert "| `rmle` | `steps` | int or null | >= 1 | `None` |" in attacks  # an optional option keeps its range
    assert "`progress`" not in attacks and "`strength`" not in options_table("defenses")
    assert "| `nopeek` | — | | | |" in options_table("defenses")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no option table for 'models'"):
        options_table("models")
