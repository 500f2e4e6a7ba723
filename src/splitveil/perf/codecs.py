"""Accuracy and bytes per request of each wire codec, measured through the real encoder and decoder."""

from __future__ import annotations

import torch

from splitveil.serve.codec import CODECS, decode, encode
from splitveil.split import SplitModel


def codec_table(split: SplitModel, images: torch.Tensor, labels: torch.Tensor, *, batch: int = 500) -> list[dict]:
    """Per codec: test accuracy when every feature crosses the codec, and bytes of a one-image request."""
    rows = []
    split.eval()
    with torch.no_grad():
        features = [split.edge(images[i : i + batch]) for i in range(0, len(images), batch)]
        for codec in CODECS:
            correct = sum(
                (split.cloud(decode(encode(z, codec=codec))).argmax(1) == labels[i * batch : i * batch + len(z)])
                .sum()
                .item()
                for i, z in enumerate(features)
            )
            rows.append(
                {"codec": codec, "accuracy": correct / len(images), "bytes": len(encode(features[0][:1], codec=codec))}
            )
    base = rows[0]
    for row in rows:
        row["fewer_bytes"] = base["bytes"] / row["bytes"]
        row["accuracy_loss_points"] = 100 * (base["accuracy"] - row["accuracy"])
    return rows
