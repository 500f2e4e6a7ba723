import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from skimage import data as skdata
from skimage.metrics import structural_similarity
from skimage.transform import resize

from splitveil.metrics import mse, psnr, ssim
from splitveil.metrics.image import ssim_fast


def _skimage_ssim(x_hat: torch.Tensor, x: torch.Tensor) -> list[float]:
    return [
        structural_similarity(
            a.double().numpy(),
            b.double().numpy(),
            data_range=1,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x_hat, x, strict=True)
    ]


def _random_pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *shape, generator=g)
    return (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1), x


def _photo_pair(shape, kind):
    """A real photograph at ``shape`` (C, H, W) and a degraded copy: blurred, noisy or darkened."""
    channels, height, width = shape
    photo = skdata.astronaut() if channels == 3 else skdata.camera()
    image = resize(photo, (height, width), anti_aliasing=True).astype(np.float32)
    image = image.transpose(2, 0, 1) if channels == 3 else image[None]
    rng = np.random.default_rng(0)
    copies = {
        "blurred": np.stack([gaussian_filter(c, sigma=1.0) for c in image]),
        "noisy": np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1),
        "darker": 0.7 * image,
    }
    return torch.from_numpy(copies[kind].astype(np.float32))[None], torch.from_numpy(image)[None]


SHAPES = [(1, 28, 28), (1, 25, 25), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("source", ["random", "blurred", "noisy", "darker"])
def test_ssim_matches_scikit_image(shape, source):
    x_hat, x = _random_pair(shape, seed=1) if source == "random" else _photo_pair(shape, source)
    ours = ssim(x_hat, x, reduction="none")
    reference = torch.tensor(_skimage_ssim(x_hat, x), dtype=torch.float64)
    assert ours.shape == reference.shape
    assert (ours.double() - reference).abs().max() < 1e-3
    assert ssim(x_hat, x) == pytest.approx(float(reference.mean()), abs=1e-3)


@pytest.mark.parametrize("metric", [mse, psnr, ssim])
def test_batched_equals_looped(metric):
    x_hat, x = _random_pair((3, 16, 16), seed=2)
    batched = metric(x_hat, x, reduction="none")
    looped = torch.stack([metric(x_hat[i : i + 1], x[i : i + 1]) for i in range(len(x))])
    assert batched.shape == (len(x),)
    torch.testing.assert_close(batched, looped)
    torch.testing.assert_close(metric(x_hat, x), batched.mean())


def test_ssim_of_identical_images_is_one():
    _, x = _random_pair((3, 32, 32), seed=3)
    torch.testing.assert_close(ssim(x, x, reduction="none"), torch.ones(len(x)))


def test_ssim_is_differentiable():
    x_hat, x = _random_pair((1, 12, 12), seed=4)
    x_hat.requires_grad_(True)
    ssim(x_hat, x).backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all()


@pytest.mark.parametrize(("offset", "expected_db"), [(0.1, 20.0), (0.01, 40.0), (0.5, 20 * math.log10(2))])
def test_psnr_of_a_known_mse(offset, expected_db):
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 0.4
    assert float(psnr(x + offset, x)) == pytest.approx(expected_db, abs=1e-4)
    assert float(psnr(255 * (x + offset), 255 * x, data_range=255.0)) == pytest.approx(expected_db, abs=1e-4)


def test_psnr_of_identical_images_is_finite_and_large():
    _, x = _random_pair((1, 8, 8), seed=6)
    values = psnr(x, x, reduction="none")
    assert torch.isfinite(values).all() and (values == 100.0).all()


def test_psnr_mean_is_the_mean_of_per_image_values_not_the_pooled_psnr():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.stack([x[0] + 0.1, x[1] + 0.01])  # 20 dB and 40 dB
    assert float(psnr(x_hat, x)) == pytest.approx(30.0, abs=1e-4)
    pooled = 10 * math.log10(1 / float(mse(x_hat, x)))
    assert pooled == pytest.approx(22.97, abs=1e-2)  # what we deliberately do not report


def test_mse_matches_brute_force():
    x_hat, x = _random_pair((3, 5, 7), seed=7)
    a, b = x_hat.double().numpy(), x.double().numpy()
    expected = []
    for i in range(a.shape[0]):
        total = 0.0
        for c in range(a.shape[1]):
            for h in range(a.shape[2]):
                for w in range(a.shape[3]):
                    total += (a[i, c, h, w] - b[i, c, h, w]) ** 2
        expected.append(total / (a.shape[1] * a.shape[2] * a.shape[3]))
    torch.testing.assert_close(mse(x_hat, x, reduction="none").double(), torch.tensor(expected))
    assert float(mse(x_hat, x)) == pytest.approx(sum(expected) / len(expected), rel=1e-6)


@pytest.mark.parametrize("metric", [mse, psnr, ssim])
def test_shape_mismatch_names_both_shapes(metric):
    with pytest.raises(ValueError, match=r"\(2, 1, 12, 12\).*\(2, 3, 12, 12\)"):
        metric(torch.rand(2, 1, 12, 12), torch.rand(2, 3, 12, 12))
    with pytest.raises(ValueError, match="4 dimensions"):
        metric(torch.rand(1, 12, 12), torch.rand(1, 12, 12))
    with pytest.raises(ValueError, match="reduction"):
        metric(torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12), reduction="sum")


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 1, 10, 30), torch.rand(1, 1, 10, 30))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), noise=st.floats(0.0, 1.0), channels=st.sampled_from([1, 3]))
def test_ssim_is_symmetric_and_bounded(seed, noise, channels):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, channels, 12, 12, generator=g)
    x_hat = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    forward, backward = ssim(x_hat, x, reduction="none"), ssim(x, x_hat, reduction="none")
    torch.testing.assert_close(forward, backward, atol=1e-5, rtol=0)
    assert (forward >= -1).all() and (forward <= 1 + 1e-6).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), low=st.floats(1e-3, 0.5), factor=st.floats(1.1, 4.0))
def test_psnr_decreases_as_noise_grows(seed, low, factor):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 8, 8, generator=g)
    noise = torch.randn(x.shape, generator=g)
    less, more = float(psnr(x + low * noise, x)), float(psnr(x + factor * low * noise, x))
    assert less > more
    assert less == pytest.approx(more + 20 * math.log10(factor), abs=1e-3)  # MSE scales with factor**2


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 3, 20, 25), (2, 2, 11, 11)])
def test_ssim_fast_equals_ssim_and_has_gradients(shape):
    generator = torch.Generator().manual_seed(7)
    x = torch.rand(shape, generator=generator)
    x_hat = (x + 0.3 * torch.randn(shape, generator=generator)).clamp(0, 1).requires_grad_(True)
    fast = ssim_fast(x_hat, x)
    assert torch.allclose(fast, ssim(x_hat.detach(), x, reduction="none"), atol=1e-5)
    fast.sum().backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
