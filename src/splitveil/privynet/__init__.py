"""PrivyNet (Li et al., arXiv 1709.06161): a frozen local network pretrained on public data, a cloud
network trained on its features, and a planner that picks the local topology (layers, channel
count, which channels) with the best accuracy under privacy, compute and storage constraints.

``splitveil plan SPEC`` runs :func:`plan`; see docs/privynet.md.
"""

from splitveil.privynet.channels import attacker_guided_channels, channel_usefulness, random_channels
from splitveil.privynet.local import FrozenLocal, local_network, local_width, privynet_split
from splitveil.privynet.planner import Candidate, Plan, plan, within_budget
from splitveil.privynet.spec import PlanConstraints, PlanSpec, load_plan_spec

__all__ = [
    "Candidate",
    "FrozenLocal",
    "Plan",
    "PlanConstraints",
    "PlanSpec",
    "attacker_guided_channels",
    "channel_usefulness",
    "load_plan_spec",
    "local_network",
    "local_width",
    "plan",
    "privynet_split",
    "random_channels",
    "within_budget",
]
