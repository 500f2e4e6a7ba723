"""The ``splitveil`` command line, one module per command group; parsing and printing only.

- :mod:`~splitveil.cli.main`: the app and the entry point (one-line refusals);
- :mod:`~splitveil.cli.models`: ``models``, ``profile``, ``datasets``, ``train``;
- :mod:`~splitveil.cli.plan`: ``plan`` (PrivyNet);
- :mod:`~splitveil.cli.audit`: ``attack``;
- :mod:`~splitveil.cli.bench`: ``bench ...``;
- :mod:`~splitveil.cli.serve`: ``export``, ``serve``, ``infer``.
"""

from splitveil.cli.main import app, main

__all__ = ["app", "main"]
