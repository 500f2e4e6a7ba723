import subprocess
import sys

import splitveil


def test_every_exported_name_resolves():
    for name in splitveil.__all__:
        assert getattr(splitveil, name) is not None, name


def test_import_is_light_and_side_effect_free():
    code = (
        "import sys, splitveil; print(sorted(m for m in ('torch', 'torchmetrics', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
