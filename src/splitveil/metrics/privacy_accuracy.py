"""Privacy accuracy (PA, Gao et al., 2021): how well reconstructions can still be *recognised*.

Single-image scores such as SSIM judge privacy poorly: a blurry reconstruction can have low SSIM
and still reveal the digit or the face. PA asks instead whether an independent evaluation
classifier recognises the attacker's reconstructions as their true class::

    PA = (1 / N) * sum_i [argmax_k classifier(x_hat_i)_k == y_i]

Lower is more private; PA of perfect reconstructions equals the classifier's clean accuracy, and
reconstructions that carry no information about the class score chance level.

The evaluation classifier must be independent of the target model, or PA would measure how well the
reconstructions fool the target rather than whether they are recognisable: by default it has a
different architecture (LeNet, not the target's HE-CNN), and it is trained on the auxiliary split,
the data the attacker or evaluator may hold, never on the target's training split.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from splitveil.data.base import DatasetSplits, ImageSet
from splitveil.seeding import seeded

# Fraction of the evaluator's data kept aside to choose its best epoch.
_VAL_FRACTION = 0.2


@torch.no_grad()
def privacy_accuracy(
    classifier: nn.Module, x_hat: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512
) -> float:
    """The fraction of reconstructions ``x_hat`` (NCHW) that ``classifier`` assigns their true ``labels``.

    The classifier runs in eval mode (its previous mode is restored afterwards).

    Example:
        >>> always_zero = nn.Linear(4, 2)  # a "classifier" that predicts class 0 for every image
        >>> with torch.no_grad():
        ...     _ = always_zero.weight.zero_(), always_zero.bias.copy_(torch.tensor([1.0, 0.0]))
        >>> classifier = nn.Sequential(nn.Flatten(), always_zero)
        >>> privacy_accuracy(classifier, torch.rand(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]))
        0.5
    """
    if x_hat.ndim != 4:
        raise ValueError(f"x_hat must be an NCHW batch, got shape {tuple(x_hat.shape)}")
    if labels.ndim != 1 or labels.shape[0] != x_hat.shape[0]:
        raise ValueError(
            f"need one label per reconstruction, got labels {tuple(labels.shape)} for x_hat {tuple(x_hat.shape)}"
        )
    if x_hat.shape[0] == 0:
        raise ValueError("privacy accuracy of an empty batch is undefined")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = classifier.training
    classifier.eval()
    try:
        correct = 0
        for start in range(0, x_hat.shape[0], batch_size):
            logits = classifier(x_hat[start : start + batch_size].detach())
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    finally:
        classifier.train(was_training)
    return correct / x_hat.shape[0]


def train_evaluation_classifier(
    data: DatasetSplits | ImageSet,
    *,
    model: str = "lenet",
    epochs: int = 3,
    seed: int = 0,
    num_classes: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    model_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Train the independent evaluation classifier that :func:`privacy_accuracy` scores with.

    With a :class:`DatasetSplits` it is trained on ``data.aux`` only (never ``data.train``, the
    target's training data); an :class:`ImageSet` is taken to be such evaluator-side data already.
    A seeded 20% of those images is held out to choose the best epoch, so the evaluator touches no
    other split. ``model`` names a zoo model (LeNet by default, an architecture the target does not
    use); it is built for the data's image shape and initialised from ``seed``. Training goes
    through the project's one loop (:func:`splitveil.train.fit`) and the model is returned in eval
    mode. Nothing is cached: callers that reuse an evaluator keep it themselves.
    """
    # Imported here: the training loop pulls in the config and split machinery, which the
    # tensor-only metrics of this package do not need.
    from splitveil.config import TrainConfig
    from splitveil.models import create_model
    from splitveil.train import fit

    if isinstance(data, DatasetSplits):
        images, classes = data.aux, data.num_classes
    else:
        images, classes = data, int(data.labels.max()) + 1 if len(data) else 0
    classes = num_classes if num_classes is not None else classes
    if len(images) < 2:
        raise ValueError(f"need at least 2 images to train an evaluation classifier, got {len(images)}")
    if classes < 2:
        raise ValueError(f"an evaluation classifier needs at least 2 classes, got {classes}")

    splits = _evaluator_splits(images, num_classes=classes, seed=seed)
    with seeded(seed):  # zoo models initialise from the global RNG
        classifier = create_model(model, input_shape=splits.input_shape, num_classes=classes, **(model_options or {}))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr)
    fit(classifier, splits, config, seed=seed, progress=False)
    return classifier.eval()


def _evaluator_splits(images: ImageSet, *, num_classes: int, seed: int) -> DatasetSplits:
    """The evaluator's own train/val division of its data, in the shape ``fit`` expects.

    ``fit`` also reports a test accuracy; the evaluator has no test split of its own, so the
    validation part stands in for it (the number is not used). ``aux`` is empty.
    """
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(_VAL_FRACTION * len(images)))
    train, val = images.subset(order[n_val:]), images.subset(order[:n_val])
    return DatasetSplits(
        name="evaluator",
        train=train,
        val=val,
        test=val,
        aux=images.take(0),
        num_classes=num_classes,
        class_names=tuple(str(k) for k in range(num_classes)),
        seed=seed,
    )
