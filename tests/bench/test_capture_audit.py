"""Auditing a capture in bounded chunks: the chunking, the survey, and the same answer as inverting it whole."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitveil.audit import invert_features, score_reconstruction, transmitted_features
from splitveil.bench.capture_audit import audit_capture, captured_chunks, survey_capture
from splitveil.config import AttackSpec
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.serve.capture import CaptureWriter
from splitveil.serve.capture_reader import CaptureReader
from splitveil.serve.codec import encode
from splitveil.split import cut


def _capture(path, frames: list[torch.Tensor]):
    writer = CaptureWriter(path)
    for frame in frames:
        writer.write(encode(frame))
    writer.close()
    return path


def _numbered_frames(sizes: list[int], feature_shape=(2, 3)) -> list[torch.Tensor]:
    """Frames whose samples are numbered 0, 1, 2, ... in arrival order (the number fills each sample)."""
    frames, start = [], 0
    for size in sizes:
        numbers = torch.arange(start, start + size, dtype=torch.float32)
        frames.append(numbers.view(-1, 1, 1).expand(size, *feature_shape).contiguous())
        start += size
    return frames


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    chunk=st.integers(1, 12),
    cut_short=st.integers(0, 5),
)
def test_chunks_hold_the_first_samples_in_order_and_are_full_but_the_last(tmp_path_factory, sizes, chunk, cut_short):
    path = _capture(tmp_path_factory.mktemp("cap") / "wire.svcap", _numbered_frames(sizes))
    limit = max(1, sum(sizes) - cut_short)
    chunks = list(captured_chunks(CaptureReader(path), limit=limit, chunk_samples=chunk))
    assert [len(c) for c in chunks[:-1]] == [chunk] * (len(chunks) - 1) and 1 <= len(chunks[-1]) <= chunk
    assert torch.equal(torch.cat(chunks)[:, 0, 0], torch.arange(limit, dtype=torch.float32))


def test_the_survey_counts_from_headers_and_refuses_a_wrong_shape_or_an_empty_capture(tmp_path):
    path = _capture(tmp_path / "wire.svcap", _numbered_frames([3, 5, 2]))
    survey = survey_capture(path, (2, 3))
    assert (survey.frames, survey.samples, survey.feature_shape) == (3, 10, (2, 3))
    with pytest.raises(ConfigError, match=r"holds features of shape \(2, 3\), but this deployment sends \(4, 3\)"):
        survey_capture(path, (4, 3))
    with pytest.raises(ConfigError, match="holds no captured requests yet"):
        survey_capture(_capture(tmp_path / "empty.svcap", []), (2, 3))


@pytest.fixture
def split():
    torch.manual_seed(0)
    model = create_model("he-cnn", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8, 8), hidden=16)
    return cut(model.eval(), "relu22")


def test_a_capture_audited_in_chunks_scores_as_the_whole_batch_inverted_at_once(split, tiny_data, tmp_path):
    sent = tiny_data.test.images[:11]
    features = transmitted_features(split, sent)
    path = _capture(tmp_path / "wire.svcap", [features[:4], features[4:5], features[5:]])
    attack = AttackSpec(name="inverse-network", options={"epochs": 1})
    audit = audit_capture(
        split, attack, path, data=tiny_data, seed=0, progress=False, originals=sent, chunk_samples=3, preview=5
    )
    whole = invert_features(split, attack, data=tiny_data, features=features, seed=0, progress=False)
    expected = score_reconstruction(whole, sent)
    assert audit.samples == 11 and audit.damage == ()
    assert torch.allclose(audit.preview, whole[:5], atol=1e-5)
    assert audit.score.ssim == pytest.approx(expected.ssim, abs=1e-5)
    assert audit.score.psnr == pytest.approx(expected.psnr, abs=1e-3)
    assert audit.score.mse == pytest.approx(expected.mse, abs=1e-6)


def test_originals_must_match_the_captured_samples_before_any_training(split, tiny_data, tmp_path):
    features = transmitted_features(split, tiny_data.test.images[:4])
    path = _capture(tmp_path / "wire.svcap", [features])
    attack = AttackSpec(name="inverse-network", options={"epochs": 1})
    with pytest.raises(ConfigError, match="3 original images were given but the capture holds 4 samples"):
        audit_capture(split, attack, path, data=tiny_data, seed=0, progress=False, originals=tiny_data.test.images[:3])
