"""Genie world model (Bruce et al. 2024, arXiv 2402.15391): video tokenizer, latent action model, MaskGIT dynamics.

Data flow: frames ``(B, T, 3, H, W)`` in ``[-1, 1]`` -> :class:`VideoTokenizer` token ids ``(B, T, h, w)``;
frames -> :class:`LatentActionModel` action ids ``(B, T - 1)``; tokens + actions -> :class:`DynamicsModel`, sampled
one frame at a time with :class:`MaskGITRollout` (KV-cached) or :func:`sample_next_frame` (reference). Sizes live in
:mod:`~genie_env.models.genie.presets`; :class:`GenieWorldModel` bundles the three for rollouts and evaluation.
"""

from genie_env.models.genie.dynamics import NO_ACTION, DynamicsCache, DynamicsModel
from genie_env.models.genie.lam import LatentActionModel
from genie_env.models.genie.maskgit import MaskGITRollout, cosine_schedule, maskgit_sample, sample_next_frame
from genie_env.models.genie.presets import (
    PAPER_PARAMETERS,
    PRESETS,
    GeniePreset,
    build_model,
    build_models,
    count_parameters,
    get_preset,
    parameter_counts,
)
from genie_env.models.genie.quantize import QuantizerOutput, VectorQuantizer
from genie_env.models.genie.st_transformer import KVCache, STTransformer
from genie_env.models.genie.tokenizer import VideoTokenizer, psnr_from_mse
from genie_env.models.genie.world import GenieWorldModel, assemble_genie_bundle

__all__ = [
    "NO_ACTION",
    "PAPER_PARAMETERS",
    "PRESETS",
    "DynamicsCache",
    "DynamicsModel",
    "GeniePreset",
    "GenieWorldModel",
    "KVCache",
    "LatentActionModel",
    "MaskGITRollout",
    "QuantizerOutput",
    "STTransformer",
    "VectorQuantizer",
    "VideoTokenizer",
    "assemble_genie_bundle",
    "build_model",
    "build_models",
    "cosine_schedule",
    "count_parameters",
    "get_preset",
    "maskgit_sample",
    "parameter_counts",
    "psnr_from_mse",
    "sample_next_frame",
]
