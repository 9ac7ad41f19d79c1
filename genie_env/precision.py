"""Inference precision of the world models: float32, or bfloat16 matrix products under ``torch.autocast``.

``"bfloat16"`` runs the linear layers, convolutions and attention of a world model in bfloat16 while autocast
keeps the numerically delicate operations (normalisation, softmax, losses) in float32. On CPUs with AMX tiles
(Intel Sapphire Rapids and later: ``amx_bf16`` in ``/proc/cpuinfo``) a bfloat16 matrix product is several times
faster than a float32 one; without AMX it is usually slower, so float32 stays the default. On CUDA it is the
usual mixed precision.

The weights and every tensor a world keeps between steps (frames, latents, poses) stay float32: only the
arithmetic inside a step changes, so a bundle is the same file whatever precision steps it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, get_args

import torch

Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: Any) -> Precision:
    """``precision`` itself if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision  # type: ignore[no-any-return]


def autocast(device: torch.device | str, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """The context a world model's step runs in: ``torch.autocast`` to bfloat16, or nothing for float32."""
    if check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
