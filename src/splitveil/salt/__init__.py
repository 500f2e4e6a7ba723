"""Salted outputs (Salted DNNs): the client's secret salt relabels the classes the cloud computes.

- :mod:`~splitveil.salt.codes`: the relabelling tables (cyclic shift, keyed permutation, keyed Latin square);
- :mod:`~splitveil.salt.sources`: where salts come from (seeded for audits, secret or keyed for clients);
- :mod:`~splitveil.salt.layer`: the salted layer that mixes the salt into the edge's features;
- :mod:`~splitveil.salt.split`: :class:`SaltedSplit`, whose ``forward`` salts, runs and decodes.

The defense that builds them is ``create_defense("salted", ...)`` (:mod:`splitveil.defenses.salted`).
"""

from splitveil.salt.codes import SaltCode, latin_code, permutation_code, shift_code
from splitveil.salt.layer import SaltedEdge, SaltMaps, SaltVector
from splitveil.salt.sources import KeyedSalts, SaltSource, SecretSalts, TorchSalts
from splitveil.salt.split import SaltedSplit

__all__ = [
    "KeyedSalts",
    "SaltCode",
    "SaltMaps",
    "SaltSource",
    "SaltVector",
    "SaltedEdge",
    "SaltedSplit",
    "SecretSalts",
    "TorchSalts",
    "latin_code",
    "permutation_code",
    "shift_code",
]
