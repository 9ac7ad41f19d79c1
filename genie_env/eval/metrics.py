"""Image and label metrics for world-model evaluation: PSNR, SSIM (batched torch) and NMI (numpy).

Images are ``(..., C, H, W)`` tensors, either ``uint8`` in ``[0, 255]`` (data range 255) or float in ``[-1, 1]``
(data range 2). Both arguments must use the same convention; every leading index gets its own score, so a batch of
clips ``(B, T, 3, H, W)`` gives ``(B, T)`` per-frame scores. Scores are computed in float64 (float32 on MPS, which
has no float64) so that uint8 inputs give exact, reproducible numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import pack, unpack
from torch import Tensor

PSNR_CAP_DB = 100.0
"""PSNR of identical images. The exact value is +inf, which would make every mean over frames inf (a static scene
copied from the prompt is common) and is not valid JSON, so PSNR is capped here; a real reconstruction error of one
grey level in one pixel of a 64x64 RGB frame already gives about 89 dB, below the cap."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _prepare(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, float]:
    """Checks a pair of image batches; returns them as float and their data range (255 or 2)."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"images must be torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 3:
        raise ValueError(f"images must be (..., C, H, W), got shape {tuple(a.shape)}")
    if a.dtype == torch.uint8 and b.dtype == torch.uint8:
        data_range = 255.0
    elif a.is_floating_point() and b.is_floating_point():
        data_range = 2.0
    else:
        raise ValueError(
            f"images must both be uint8 in [0, 255] or both float in [-1, 1], got dtypes {a.dtype} and {b.dtype}"
        )
    dtype = _float_dtype(a.device)
    return a.to(dtype), b.to(dtype), data_range


def from_uint8(frames: Tensor) -> Tensor:
    """``uint8`` frames in ``[0, 255]`` -> float32 in ``[-1, 1]``, same shape (the inverse of :func:`to_uint8`)."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"from_uint8 expects uint8 frames, got dtype {frames.dtype}")
    return frames.float() / 127.5 - 1.0


def to_uint8(frames: Tensor) -> Tensor:
    """Float frames in ``[-1, 1]`` -> ``uint8`` in ``[0, 255]`` (rounded, clamped), same shape."""
    if not frames.is_floating_point():
        raise ValueError(f"to_uint8 expects float frames in [-1, 1], got dtype {frames.dtype}")
    return ((frames.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio of every image, in dB, capped at :data:`PSNR_CAP_DB` (identical images).

    Args:
        a: ``(..., C, H, W)`` uint8 in ``[0, 255]`` (peak 255) or float in ``[-1, 1]`` (peak-to-peak 2).
        b: like ``a``.

    Returns:
        ``(...)`` PSNR per image.
    """
    a, b, data_range = _prepare(a, b)
    mse = (a - b).square().mean(dim=(-3, -2, -1))
    # Clamping the MSE (not the result) keeps log10 finite; the floor is exactly the cap.
    floor = data_range**2 / 10 ** (PSNR_CAP_DB / 10)
    return 10.0 * torch.log10(data_range**2 / mse.clamp(min=floor))


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 2-D Gaussian ``(channels, 1, size, size)`` for a depthwise conv."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity (Wang et al. 2004) of every image.

    The standard form: an 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, local statistics
    over the window positions that lie fully inside the image ("valid", as in the reference MATLAB code and in
    scikit-image with ``gaussian_weights=True, use_sample_covariance=False``, which crops the borders), each channel
    separately, then the mean over channels and positions. ``L`` is the data range of the input convention.

    Args:
        a: ``(..., C, H, W)`` uint8 in ``[0, 255]`` (``L = 255``) or float in ``[-1, 1]`` (``L = 2``), ``H, W >= 11``.
        b: like ``a``.

    Returns:
        ``(...)`` SSIM per image, in ``[-1, 1]`` (1 for identical images).
    """
    a, b, data_range = _prepare(a, b)
    c, h, w = a.shape[-3:]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    x, ps = pack([a], "* c h w")
    y, _ = pack([b], "* c h w")
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, c, x.dtype, x.device)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return unpack(ssim_map.mean(dim=(-3, -2, -1)), ps, "*")[0]


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information of two labelings, ``I(a; b) / ((H(a) + H(b)) / 2)`` (arithmetic mean).

    Matches scikit-learn's ``normalized_mutual_info_score`` (default ``average_method="arithmetic"``): 1 for the
    same partition under any renaming of labels, 0 for independent ones (up to finite-sample bias), and 1 when both
    labelings put everything in one class.

    Args:
        a: ``(N,)`` labels (any values ``np.unique`` can sort, e.g. ints).
        b: ``(N,)`` labels.

    Returns:
        NMI in ``[0, 1]``.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise ValueError(f"labelings must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("labelings are empty; NMI needs at least one sample")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ka, kb = int(ai.max()) + 1, int(bi.max()) + 1
    joint = np.bincount(ai.ravel() * kb + bi.ravel(), minlength=ka * kb).reshape(ka, kb) / len(a)
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])))
    ha = float(-np.sum(pa * np.log(pa)))
    hb = float(-np.sum(pb * np.log(pb)))
    if ha == 0.0 and hb == 0.0:
        return 1.0  # one class each: the same (trivial) partition
    return float(min(max(mi / ((ha + hb) / 2), 0.0), 1.0))


def mean_or_none(values: Tensor) -> float | None:
    """Mean of a tensor as a float, ``None`` when it is empty or not finite (JSON has no NaN)."""
    if values.numel() == 0:
        return None
    mean = float(values.double().mean())
    return mean if math.isfinite(mean) else None
