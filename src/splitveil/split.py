"""Cut a PyTorch model into an edge half and a cloud half at a named point.

Any ``nn.Module`` that torch.fx can trace can be cut, residual graphs included. A cut point is
*valid* when exactly one tensor crosses it: every node the cloud half runs depends on the input only
through the cut node. That rules out cutting inside a residual block, where the skip connection
would be a second tensor on the wire.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> _ = net(torch.zeros(1, 1, 8, 8))
    >>> split = cut(net, at="1")
    >>> x = torch.rand(2, 1, 8, 8)
    >>> torch.equal(split.cloud(split.edge(x)), net(x))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from splitveil.blocks.noise_source import draws_noise
from splitveil.errors import InvalidCutError

if TYPE_CHECKING:  # profile imports this module, so the real import waits until profile() runs
    from splitveil.profile import CostProfile

#: Node kinds that carry tensors computed from the input (placeholders and outputs excluded).
_COMPUTE_OPS = frozenset({"call_module", "call_function", "call_method"})


class SplitModel(nn.Module):
    """A model in two halves: ``edge`` runs on the device, ``cloud`` on the server.

    ``forward(x) == cloud(edge(x))``; ``z = edge(x)`` is the only tensor that crosses the network.
    The halves share parameters with the model they were cut from, so training the split trains it.
    """

    def __init__(self, edge: nn.Module, cloud: nn.Module, *, cut_name: str = "") -> None:
        super().__init__()
        self.edge = edge
        self.cloud = cloud
        self.cut_name = cut_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cloud(self.edge(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(z, logits)``: the transmitted feature and the cloud's output."""
        z = self.edge(x)
        return z, self.cloud(z)

    def profile(self, input_shape: tuple[int, ...]) -> CostProfile:
        """Edge/cloud FLOPs and parameters, and the feature's shape and bytes, per sample."""
        from splitveil.profile import profile_split

        return profile_split(self, input_shape)


@dataclass(frozen=True)
class _CutPlan:
    node: fx.Node
    edge_nodes: list[fx.Node]
    cloud_nodes: list[fx.Node]


class _Tracer(fx.Tracer):
    """fx's tracer, keeping every stochastic block (noise, dropout) as one module call.

    Traced through, a block's draw would be frozen with the noise source it had at tracing time, and
    :func:`~splitveil.blocks.noise_source.use_noise_source` (the edge client's secure source, the
    audit's seeded one) could no longer reach it. Kept whole, it also traces whatever its shape
    arithmetic is (a salted layer placed after bounded noise traces the noised edge).
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return draws_noise(m) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; untraceable control flow becomes a clear error."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise InvalidCutError(
            f"cannot trace {type(model).__name__} with torch.fx ({exc}); make data-dependent "
            "control flow static, or cut a model built from nn.Sequential blocks"
        ) from exc


def cut_aliases(model: nn.Module) -> dict[str, str]:
    """Friendly cut names a model declares (``cut_points`` attribute), mapped to graph names."""
    declared = getattr(model, "cut_points", None) or {}
    if isinstance(declared, Mapping):
        return dict(declared)
    return {name: name for name in declared}


def valid_cuts(model: nn.Module) -> list[str]:
    """Every graph name where a single tensor crosses, in execution order."""
    graph = trace(model).graph
    return [_node_label(node) for node in graph.nodes if _plan_or_none(graph, node) is not None]


def cut(model: nn.Module, at: str) -> SplitModel:
    """Split ``model`` after the point named ``at``; the edge's output is that point's output.

    ``at`` may be a cut name the model declares in ``cut_points`` (e.g. ``"relu22"``), a module's
    qualified name (``"layer1.0.out_relu"``) or an fx node name (``"add_1"``).

    Raises:
        InvalidCutError: ``at`` names nothing in the graph, or more than one tensor would cross.
    """
    graph_module = trace(model)
    graph = graph_module.graph
    target_name = cut_aliases(model).get(at, at)
    node = _find_node(graph, target_name)
    if node is None:
        raise InvalidCutError(f"unknown cut {at!r} for {type(model).__name__}; valid cuts: {_cut_menu(model)}")
    plan = _plan_or_none(graph, node)
    if plan is None:
        crossing = ", ".join(_node_label(n) for n in _crossing_nodes(graph, node))
        raise InvalidCutError(
            f"cut {at!r} is invalid: more than one tensor would cross it ({crossing}); valid cuts: {_cut_menu(model)}"
        )
    edge = _build_half(graph_module, plan.edge_nodes, inputs=None, output=node)
    cloud = _build_half(graph_module, plan.cloud_nodes, inputs=node, output=None)
    return SplitModel(edge, cloud, cut_name=at)


def _node_label(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _find_node(graph: fx.Graph, name: str) -> fx.Node | None:
    for node in graph.nodes:
        if node.op in _COMPUTE_OPS and (node.name == name or _node_label(node) == name):
            return node
    return None


def _cut_menu(model: nn.Module) -> str:
    aliases = cut_aliases(model)
    names = list(aliases) if aliases else valid_cuts(model)
    return ", ".join(names)


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return seen


def _depends_on_input(nodes: set[fx.Node]) -> bool:
    return any(n.op == "placeholder" for n in nodes)


def _crossing_nodes(graph: fx.Graph, node: fx.Node) -> list[fx.Node]:
    """Edge-side nodes (other than ``node``) whose values the cloud side would need."""
    edge = _ancestors(node) | {node}
    crossing = []
    for candidate in graph.nodes:
        if candidate in edge or candidate.op == "get_attr":
            continue
        for used in candidate.all_input_nodes:
            if used in edge and used is not node and used.op != "get_attr" and used not in crossing:
                crossing.append(used)
    return crossing


def _plan_or_none(graph: fx.Graph, node: fx.Node) -> _CutPlan | None:
    if node.op not in _COMPUTE_OPS:
        return None
    ancestors = _ancestors(node)
    if not _depends_on_input(ancestors) or not node.users:
        return None
    if any(user.op == "output" for user in node.users) and len(node.users) == 1:
        return None  # cutting after the last op leaves an empty cloud
    if _crossing_nodes(graph, node):
        return None
    edge_set = ancestors | {node}
    edge_nodes = [n for n in graph.nodes if n in edge_set and n.op != "output"]
    cloud_nodes = [n for n in graph.nodes if n not in edge_set and n.op != "placeholder"]
    return _CutPlan(node=node, edge_nodes=edge_nodes, cloud_nodes=cloud_nodes)


def _build_half(
    source: fx.GraphModule,
    nodes: list[fx.Node],
    *,
    inputs: fx.Node | None,
    output: fx.Node | None,
) -> fx.GraphModule:
    """Copy ``nodes`` into a new graph; ``inputs`` becomes its placeholder, ``output`` its result.

    ``get_attr`` nodes (constants, buffers used functionally) are copied on demand into whichever
    half uses them, since they are weights, not activations, and never cross the network.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if inputs is not None:
        env[inputs] = graph.placeholder("z")

    def lookup(old: fx.Node) -> fx.Node:
        if old not in env and old.op == "get_attr":
            env[old] = graph.node_copy(old, lookup)
        return env[old]

    for old in nodes:
        if old.op == "output":
            graph.output(fx.map_arg(old.args[0], lookup))
        elif old not in env:
            env[old] = graph.node_copy(old, lookup)
    if output is not None:
        graph.output(env[output])
    half = fx.GraphModule(source, graph)
    half.train(source.training)
    return half
