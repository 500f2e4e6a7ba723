"""Soft channel masks on the edge's convolutions, and their physical removal with torch-pruning.

PATROL trains one scale per output channel of every edge convolution (:class:`ChannelMask`,
inserted by torch.fx graph editing) and afterwards removes the channels whose masks are smallest
until the edge meets a FLOPs budget (:func:`prune_to_budget`):

1. every mask is folded into the layer it follows (a conv's or BatchNorm's per-channel weight and
   bias are multiplied by it, so outputs are unchanged) and replaced by ``nn.Identity``;
2. channels are ranked globally, across all edge convolutions, by ``|m|`` [paper: "remove the
   structures with the smallest mask values"; the L1 penalty puts every mask on one scale, so the
   ranking is comparable across layers and training decides which layers thin out], keeping the
   ``min_channels`` largest of every layer so no layer collapses;
3. the fewest lowest-ranked channels whose removal meets the budget are found by bisection (FLOPs
   never grow when more channels go), each trial pruning a copy and profiling it;
4. torch-pruning's ``DependencyGraph``, built on the whole split, removes them: consumers shrink with
   them (the next conv's and BatchNorm's inputs, and the cloud's first layer when the cut layer's
   channels go), and channels coupled by a residual sum are removed together. A coupled group is
   ranked by the largest mask among its convs: a channel is free only when every writer dropped it.

The record lists, per group root, the removed output-channel indices in the original numbering;
:func:`replay_pruning` repeats exactly that on a freshly masked split, so saved weights load into it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from splitveil.errors import ConfigError
from splitveil.split import SplitModel


class ChannelMask(nn.Module):
    """``x · m`` with one trainable scale per channel (dim 1), initialised to exactly 1.

    ``follows`` is the qualified name (in the edge) of the layer whose output it scales, into which
    it is folded before pruning; ``conv`` the convolution whose output channels it ranks.
    """

    def __init__(self, channels: int, *, follows: str, conv: str, like: torch.Tensor | None = None) -> None:
        super().__init__()
        # On the conv weight's device and dtype (``like``), so the product never changes either.
        self.mask = nn.Parameter(torch.ones(channels) if like is None else like.new_ones(channels))
        self.follows = follows
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, *([1] * (x.ndim - 2)))

    def extra_repr(self) -> str:
        return f"{self.mask.numel()}, follows={self.follows!r}"


def insert_channel_masks(edge: fx.GraphModule) -> list[str]:
    """Insert a :class:`ChannelMask` after every ``Conv2d`` of ``edge`` (in place); their names, in order.

    The mask goes after the conv's BatchNorm when one directly follows (it would otherwise be
    normalised away); a conv followed by a non-affine BatchNorm gets no mask (nothing to fold into).
    """
    names = []
    for node in list(edge.graph.nodes):
        if node.op != "call_module" or not isinstance(conv := edge.get_submodule(node.target), nn.Conv2d):
            continue
        anchor = _batch_norm_after(edge, node) or node
        if anchor is not node and not edge.get_submodule(str(anchor.target)).affine:
            continue
        name = "mask_" + node.target.replace(".", "_")
        if hasattr(edge, name):
            raise ConfigError(f"patrol: the edge already has a {name!r}; apply PATROL once, to an undefended split")
        mask = ChannelMask(conv.out_channels, follows=str(anchor.target), conv=node.target, like=conv.weight)
        edge.add_submodule(name, mask.train(edge.training))
        with edge.graph.inserting_after(anchor):
            mask_node = edge.graph.call_module(name, (anchor,))

        def not_the_mask(user: fx.Node, new: fx.Node = mask_node) -> bool:
            return user is not new

        anchor.replace_all_uses_with(mask_node, delete_user_cb=not_the_mask)
        names.append(name)
    edge.recompile()
    return names


def mask_modules(edge: nn.Module) -> dict[str, ChannelMask]:
    """The edge's channel masks by name (empty once they were folded away)."""
    return {name: module for name, module in edge.named_children() if isinstance(module, ChannelMask)}


@torch.no_grad()
def fold_masks(edge: nn.Module) -> dict[str, torch.Tensor]:
    """Fold every mask into the layer it follows and replace it by ``nn.Identity`` (in place).

    Returns each mask's values keyed by the qualified name of the conv whose channels it scaled.
    """
    values = {}
    for name, mask in mask_modules(edge).items():
        layer = edge.get_submodule(mask.follows)
        if not isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):
            raise TypeError(
                f"mask {name!r} follows {type(layer).__name__} {mask.follows!r}, not a Conv2d or BatchNorm2d"
            )
        m = mask.mask.detach()
        shape = (-1, *([1] * (layer.weight.ndim - 1)))  # a conv's out-channels / BatchNorm's features
        layer.weight.mul_(m.view(shape))
        if layer.bias is not None:
            layer.bias.mul_(m)
        setattr(edge, name, nn.Identity())
        values[mask.conv] = m.clone()
    return values


def prune_to_budget(
    split: SplitModel, *, budget: int, input_shape: tuple[int, ...], min_channels: int
) -> dict[str, object]:
    """Fold the masks, then remove the lowest-mask channels until ``edge_flops <= budget`` (in place).

    Returns the JSON-serialisable record that :func:`replay_pruning` replays.

    Raises:
        ConfigError: the split has no masks, or the budget is out of reach at ``min_channels``
            (the split is left unchanged).
    """
    masks = mask_modules(split.edge)
    if not masks:
        raise ConfigError("patrol: the edge has no channel masks; finalize the split apply() returned, once")
    before = split.profile(input_shape).edge_flops
    folded = copy.deepcopy(split)
    scores = {f"edge.{conv}": values.abs() for conv, values in fold_masks(folded.edge).items()}
    groups = channel_groups(folded, scores, input_shape=input_shape)
    ranking = _removal_ranking(groups, min_channels=min_channels)
    roots = [root for root, _ in groups]

    def flops_after(count: int) -> int:
        trial = copy.deepcopy(folded)
        prune_channels(trial, _removal_plan(roots, ranking, count), input_shape=input_shape)
        return trial.profile(input_shape).edge_flops

    least = flops_after(len(ranking))
    if least > budget:
        raise ConfigError(
            f"patrol: cannot meet the edge FLOPs budget {budget:,}: with every edge conv pruned down to "
            f"min_channels={min_channels} the edge still needs {least:,} FLOPs (unpruned: {before:,}); raise the "
            "budget (flops_budget, or a deeper budget_cut), lower min_channels, or cut the model earlier"
        )
    plan = _removal_plan(roots, ranking, _fewest(flops_after, len(ranking), budget))
    fold_masks(split.edge)
    prune_channels(split, plan, input_shape=input_shape)
    return {
        "masks": list(masks),
        "pruned": plan,
        "input_shape": list(input_shape),
        "edge_flops_before": before,
        "edge_flops": split.profile(input_shape).edge_flops,
        "budget": budget,
    }


def replay_pruning(split: SplitModel, record: Mapping[str, object]) -> None:
    """Repeat :func:`prune_to_budget`'s structural change from its ``record`` on a freshly masked split."""
    fields: Mapping[str, Any] = record  # untrusted: a wrong shape raises below and is reported
    try:
        names = list(fields["masks"])
        plan = {str(root): [int(i) for i in channels] for root, channels in fields["pruned"].items()}
        input_shape = tuple(int(size) for size in fields["input_shape"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(f"patrol: not a pruning record ({exc!r}); pass the dict finalize() returned") from exc
    present = list(mask_modules(split.edge))
    if present != names:
        raise ConfigError(
            f"patrol: the record folds masks {names} but the split has {present}; restore onto a split that "
            "apply() just returned for the same model and cut"
        )
    fold_masks(split.edge)
    prune_channels(split, plan, input_shape=input_shape)


def channel_groups(
    split: SplitModel, scores: Mapping[str, torch.Tensor], *, input_shape: tuple[int, ...]
) -> list[tuple[str, torch.Tensor]]:
    """Merge convs whose output channels are coupled; ``(root conv, per-channel score)`` in execution order.

    ``scores`` maps split-qualified conv names to per-channel scores; a coupled group's score is the
    largest over its scored convs, and the group is named by its first conv.
    """
    graph = _dependency_graph(split, input_shape)
    names = {module: name for name, module in split.named_modules()}
    claimed: set[str] = set()
    groups = []
    for root, root_scores in scores.items():
        if root in claimed:
            continue
        conv = _conv(split, root)
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        combined = root_scores.clone()
        for item in group:
            member = names.get(item.dep.target.module)
            if (
                member is not None
                and member in scores
                and member != root
                and graph.is_out_channel_pruning_fn(item.dep.handler)
            ):
                claimed.add(member)
                combined[item.root_idxs] = torch.maximum(combined[item.root_idxs], scores[member][item.idxs])
        groups.append((root, combined))
    return groups


def prune_channels(split: SplitModel, plan: Mapping[str, Sequence[int]], *, input_shape: tuple[int, ...]) -> None:
    """Remove, for each root conv in ``plan`` (in order), those output channels and everything coupled."""
    if not plan:
        return
    graph = _dependency_graph(split, input_shape)
    for root, channels in plan.items():
        conv = _conv(split, root)
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(channels))
        if not graph.check_pruning_group(group):
            raise ConfigError(f"patrol: cannot remove {len(channels)} of the {conv.out_channels} channels of {root}")
        group.prune()


def _conv(split: SplitModel, name: str) -> nn.Conv2d:
    try:
        module = split.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Conv2d):
        raise ConfigError(f"patrol: the split has no Conv2d {name!r}; restore onto a split of the same model and cut")
    return module


def _dependency_graph(split: SplitModel, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    # torch-pruning traces in eval mode and leaves the model there: put every module's flag back.
    modes = {module: module.training for module in split.modules()}
    weight = next(split.parameters())
    example = torch.zeros(1, *input_shape, device=weight.device, dtype=weight.dtype)
    try:
        with torch.enable_grad():  # it traces autograd's graph
            return tp.DependencyGraph().build_dependency(split, example_inputs=[example], verbose=False)
    finally:
        for module, training in modes.items():
            module.training = training


def _batch_norm_after(edge: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module":
        if isinstance(edge.get_submodule(str(users[0].target)), nn.BatchNorm2d):
            return users[0]
    return None


def _removal_ranking(groups: list[tuple[str, torch.Tensor]], *, min_channels: int) -> list[tuple[str, int]]:
    """Removable ``(root, channel)`` pairs, lowest score first; each group keeps its best ``min_channels``."""
    candidates = []
    for order, (root, scores) in enumerate(groups):
        kept = set(scores.argsort(descending=True, stable=True)[:min_channels].tolist())
        candidates += [
            (score, order, channel, root) for channel, score in enumerate(scores.tolist()) if channel not in kept
        ]
    candidates.sort(key=lambda candidate: candidate[:3])  # ties: execution order, then channel index
    return [(root, channel) for _, _, channel, root in candidates]


def _removal_plan(roots: list[str], ranking: list[tuple[str, int]], count: int) -> dict[str, list[int]]:
    """The first ``count`` ranked channels, by root conv in execution order, indices ascending."""
    plan: dict[str, list[int]] = {root: [] for root in roots}
    for root, channel in ranking[:count]:
        plan[root].append(channel)
    return {root: sorted(channels) for root, channels in plan.items() if channels}


def _fewest(flops_after: Callable[[int], int], most: int, budget: int) -> int:
    """The smallest removal count in ``[0, most]`` meeting the budget (``flops_after(most)`` does)."""
    low, high = 0, most
    while low < high:
        middle = (low + high) // 2
        if flops_after(middle) <= budget:
            high = middle
        else:
            low = middle + 1
    return low
