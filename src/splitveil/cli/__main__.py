"""``python -m splitveil.cli``: the ``splitveil`` command."""

from splitveil.cli.main import main

main()
