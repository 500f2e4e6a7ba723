"""Neural building blocks that defenses put into a split, apart from the ``Defense`` classes that configure them.

- :mod:`~splitveil.blocks.funnel`: SiftFunnel's funnel (squeeze-excitation, spatial attention) on the
  edge and the cloud's up-projection, and the graph surgery that attaches them;
- :mod:`~splitveil.blocks.pruning`: channel masks and structural pruning to a FLOPs budget (PATROL);
- :mod:`~splitveil.blocks.bounded_noise`: a per-sample bounded feature with calibrated noise;
- :mod:`~splitveil.blocks.noise_source`: where deployed noise is drawn from (global, a generator, secure).
"""
