"""Reconstruction quality of an attacker's ``x_hat`` against the true input ``x``: MSE, PSNR, SSIM.

All three take NCHW batches with values in ``[0, data_range]`` and compare image ``i`` of ``x_hat``
with image ``i`` of ``x``. ``reduction="none"`` gives one value per image (shape ``[N]``);
``"mean"`` (the default) averages those per-image values, the convention of inversion papers that
report "average PSNR / SSIM over the test images". SSIM and PSNR reuse torchmetrics' functional API,
imported on first use so that importing :mod:`splitveil.metrics` stays cheap.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Reduction = Literal["mean", "none"]

# PSNR is infinite for identical images; MSE is floored at this fraction of data_range**2 so the
# value stays finite (and comparable in averages and plots): identical images score 100 dB.
_MSE_FLOOR = 1e-10
# skimage's Gaussian SSIM window: sigma 1.5 truncated at 3.5 sigma, i.e. 11x11 (Wang et al., 2004).
_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 2 * int(3.5 * _SSIM_SIGMA + 0.5) + 1


def mse(x_hat: torch.Tensor, x: torch.Tensor, *, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared error per image, ``MSE_i = mean_{c,h,w} (x_hat[i] - x[i])**2``.

    Lower is better (a closer reconstruction). With ``"mean"`` the per-image values are averaged,
    which for equally sized images equals the MSE of the pooled batch.

    Example:
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> mse(x + 0.5, x)
        tensor(0.2500)
        >>> mse(torch.cat([x[:1], x[1:] + 1.0]), x, reduction="none")
        tensor([0., 1.])
    """
    _check_images(x_hat, x)
    per_image = (x_hat - x).pow(2).flatten(1).mean(dim=1)
    return _reduce(per_image, reduction)


def psnr(
    x_hat: torch.Tensor, x: torch.Tensor, *, data_range: float = 1.0, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``PSNR_i = 10 * log10(data_range**2 / MSE_i)``.

    Higher is better. PSNR is computed for each image on its own and ``"mean"`` averages those
    values (the mean of per-image PSNRs, as inversion papers report it), which is *not* the PSNR of
    the pooled batch MSE. ``MSE_i`` is floored at ``1e-10 * data_range**2`` so that a perfect
    reconstruction scores a finite 100 dB instead of ``inf``.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8)
        >>> round(float(psnr(x + 0.1, x)), 4)  # MSE 0.01 -> 20 dB
        20.0
        >>> float(psnr(x, x))
        100.0
    """
    _check_images(x_hat, x)
    from torchmetrics.functional.image import peak_signal_noise_ratio

    per_image = peak_signal_noise_ratio(x_hat, x, data_range=data_range, reduction="none", dim=(1, 2, 3))
    # PSNR falls monotonically with MSE, so capping PSNR is the same as flooring MSE.
    return _reduce(per_image.clamp(max=10.0 * math.log10(1.0 / _MSE_FLOOR)), reduction)


def ssim(
    x_hat: torch.Tensor, x: torch.Tensor, *, data_range: float = 1.0, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) per image, in ``[-1, 1]``; higher is better.

    For local Gaussian-weighted means ``mu``, variances ``s**2`` and covariance ``s_xy`` (window
    sigma 1.5, 11x11)::

        SSIM(a, b) = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a**2 + mu_b**2 + C1)(s_a**2 + s_b**2 + C2))

    with ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``, ``L = data_range``, averaged over the pixels
    whose window lies inside the image and over the channels. This matches scikit-image's
    ``structural_similarity(x_hat, x, data_range=L, channel_axis=0, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` per image. Images must be at least 11x11.

    Example:
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> round(float(ssim(x, x)), 4)
        1.0
        >>> ssim(x, x, reduction="none").shape
        torch.Size([2])
    """
    _check_images(x_hat, x)
    height, width = x.shape[-2:]
    if min(height, width) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} (its Gaussian window), got {height}x{width}"
        )
    from torchmetrics.functional.image import structural_similarity_index_measure

    result = structural_similarity_index_measure(
        x_hat,
        x,
        gaussian_kernel=True,
        sigma=_SSIM_SIGMA,
        kernel_size=_SSIM_WINDOW,
        data_range=data_range,  # a float (not a tuple) so torchmetrics does not clamp the inputs
        k1=0.01,
        k2=0.03,
        reduction="none",
        return_full_image=True,
    )
    assert isinstance(result, tuple)
    # torchmetrics (>= 1.5) averages its SSIM map over every pixel, including border pixels whose
    # window reaches into reflection padding. Wang et al. and scikit-image average only the pixels
    # whose window lies inside the image, so we crop the map ourselves before averaging.
    ssim_map = result[1]
    if ssim_map.shape != x.shape:
        raise RuntimeError(f"unexpected SSIM map shape {tuple(ssim_map.shape)} for images {tuple(x.shape)}")
    border = (_SSIM_WINDOW - 1) // 2
    inside = ssim_map[..., border : height - border, border : width - border]
    return _reduce(inside.flatten(1).mean(dim=1), reduction)


def ssim_fast(x_hat: torch.Tensor, x: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """:func:`ssim` per image (shape ``[N]``) computed with a separable Gaussian convolution over the
    valid region only: the same value (tested to 1e-5), cheap to differentiate.

    torchmetrics' SSIM pads, stacks five maps and convolves them with the full 2-D window; its
    backward pass costs seconds for a few hundred 28x28 images on a CPU, which is prohibitive as a
    training loss or inside an optimisation loop. The valid convolution computes exactly the map
    :func:`ssim` keeps after cropping its border.

    Example:
        >>> x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(ssim_fast(x, x), torch.ones(2)))
        True
    """
    _check_images(x_hat, x)
    if min(x.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {tuple(x.shape[-2:])}")
    channels = x.shape[1]
    offsets = torch.arange(_SSIM_WINDOW, dtype=x.dtype, device=x.device) - (_SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    columns = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            torch.nn.functional.conv2d(image, rows, groups=channels), columns, groups=channels
        )

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(x_hat), blur(x)
    var_a = blur(x_hat * x_hat) - mu_a**2
    var_b = blur(x * x) - mu_b**2
    covariance = blur(x_hat * x) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1)


def _check_images(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    shapes = f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)}"
    if x_hat.shape != x.shape:
        raise ValueError(f"reconstruction and input must have the same shape, got {shapes}")
    if x.ndim != 4:
        raise ValueError(f"image metrics expect NCHW batches (4 dimensions), got {shapes}")
    if not (x_hat.is_floating_point() and x.is_floating_point()):
        raise ValueError(f"image metrics expect floating-point images, got {x_hat.dtype} and {x.dtype}")


def _reduce(per_image: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
