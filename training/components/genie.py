"""Genie components: the video tokenizer (``tokenizer``), the latent action model (``lam``) and the MaskGIT
dynamics model (``dynamics``), trained in that order (the dynamics model reads the other two, frozen).

Every component trains on contiguous clips ``(B, T, 3, H, W)`` cut from the recording; with several cameras each
camera's clip is its own sample. The networks compute their own losses (``forward(batch) -> (loss, logs)`` in
:mod:`genie_env.models.genie`); the components only cut the clips, prefix the logs and draw sample images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange

from genie_env.checkpoint import load_model
from genie_env.data.windows import WindowConfig
from genie_env.models.genie import DynamicsModel, LatentActionModel, VideoTokenizer, build_model
from training.components.base import Batch, Component, Logs, to_uint8
from training.config import GenieDynamicsConfig, GenieLAMConfig, GenieTokenizerConfig


def clips(batch: Batch) -> torch.Tensor:
    """Window frames ``(B, V, T, 3, H, W)`` -> clips ``(B*V, T, 3, H, W)`` float32 in ``[-1, 1]``."""
    return rearrange(batch["frames"], "b v t c h w -> (b v) t c h w").float()


def train_logs(logs: dict[str, float]) -> Logs:
    """A network's plain log keys under ``train/``."""
    return {f"train/{key}": value for key, value in logs.items()}


def _grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of clips ``(N, T, 3, H, W)`` in ``[-1, 1]`` -> a ``uint8`` grid: a row per tensor, a column per frame."""
    stacked = torch.stack([row.float().clamp(-1, 1) for row in rows])  # (R, N, T, 3, H, W)
    return to_uint8(rearrange(stacked, "r n t c h w -> (n r h) (t w) c"))


class _ClipComponent(Component):
    """Components trained on contiguous clips of ``config.clip_frames`` frames."""

    @classmethod
    def window_config(cls, config: Any) -> WindowConfig:
        return WindowConfig(n_memory=0, n_future=config.clip_frames, memory_mode="contiguous")


class GenieTokenizerComponent(_ClipComponent):
    """Genie's ST-ViViT VQ-VAE: reconstruct clips through the token codebook (MSE + VQ loss)."""

    config_class = GenieTokenizerConfig
    description = "Genie video tokenizer (ST-ViViT VQ-VAE) reconstructing clips"

    def __init__(self, config: GenieTokenizerConfig) -> None:
        super().__init__(config)
        self.tokenizer = build_model(config.preset, "tokenizer")

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        loss, logs = self.tokenizer({"frames": clips(batch)})
        return loss, train_logs(logs)

    def models(self) -> dict[str, ModelMixin]:
        return {"tokenizer": self.tokenizer}

    @torch.no_grad()
    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Up to 4 clips, each above its reconstruction."""
        frames = clips(batch)[:4]
        recon = self.tokenizer.decode(self.tokenizer.encode(frames))
        return {"reconstruction": _grid([frames, recon])}


class GenieLAMComponent(_ClipComponent):
    """Genie's latent action model: predict ``x_{t+1}`` from ``x_{<=t}`` and the quantised latent action ``a_t``."""

    config_class = GenieLAMConfig
    description = "Genie latent action model (pixels, VQ action bottleneck) predicting next frames"

    def __init__(self, config: GenieLAMConfig) -> None:
        super().__init__(config)
        self.lam = build_model(
            config.preset,
            "lam",
            diversity_weight=config.diversity_weight,
            diversity_temperature=config.diversity_temperature,
            variance_weight=config.variance_weight,
            motion_weight=config.motion_weight,
            motion_threshold=config.motion_threshold,
            encoder_difference=config.encoder_difference,
            continuous_steps=config.continuous_steps,
        )

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        loss, logs = self.lam({"frames": clips(batch)})
        return loss, train_logs(logs)

    def models(self) -> dict[str, ModelMixin]:
        return {"lam": self.lam}

    @torch.no_grad()
    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Up to 4 clips: real frames 1.. above the LAM's predictions of them."""
        frames = clips(batch)[:4]
        pred, _ = self.lam.reconstruct(frames)
        return {"prediction": _grid([frames[:, 1:], pred])}


class GenieDynamicsComponent(_ClipComponent):
    """Genie's MaskGIT dynamics: masked-token cross-entropy on tokens and latent actions of clips.

    The tokenizer and LAM are loaded frozen from their runs and kept in eval mode (so their quantisers never
    restart codes); only the dynamics model is trained and saved.
    """

    config_class = GenieDynamicsConfig
    description = "Genie MaskGIT dynamics on tokens + latent actions (needs trained tokenizer and LAM)"

    def __init__(self, config: GenieDynamicsConfig) -> None:
        super().__init__(config)
        for key in ("tokenizer", "lam"):
            if not getattr(config, key):
                raise ValueError(f"dynamics needs a trained {key}: set component.{key}=RUN_OR_CHECKPOINT_DIR")
        self.tokenizer = load_model(config.tokenizer, "tokenizer", VideoTokenizer).requires_grad_(False)
        self.lam = load_model(config.lam, "lam", LatentActionModel).requires_grad_(False)
        self.dynamics = build_model(config.preset, "dynamics")
        assert isinstance(self.dynamics, DynamicsModel)
        expected = {
            "codebook_size": self.tokenizer.config.codebook_size,
            "num_actions": self.lam.config.num_actions,
            "grid_height": self.tokenizer.grid_h,
            "grid_width": self.tokenizer.grid_w,
        }
        for key, value in expected.items():
            if self.dynamics.config[key] != value:
                raise ValueError(
                    f"preset {config.preset!r} has dynamics {key}={self.dynamics.config[key]}, but the trained "
                    f"tokenizer/LAM give {value}: train all three with the same preset"
                )

    def train(self, mode: bool = True) -> GenieDynamicsComponent:
        super().train(mode)
        self.tokenizer.eval()
        self.lam.eval()
        return self

    @torch.no_grad()
    def tokens_and_actions(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clips ``(B, T, 3, H, W)`` -> ``{"tokens": (B, T, h, w), "actions": (B, T - 1)}`` int64."""
        return {"tokens": self.tokenizer.encode(frames), "actions": self.lam.infer_actions(frames)}

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        loss, logs = self.dynamics(self.tokens_and_actions(clips(batch)))
        return loss, train_logs(logs)

    def models(self) -> dict[str, ModelMixin]:
        return {"dynamics": self.dynamics}

    @torch.no_grad()
    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Up to 4 clips: real frames above the one-pass argmax prediction of every frame after the first when
        all of its tokens are masked (teacher-forced history)."""
        frames = clips(batch)[:4]
        data = self.tokens_and_actions(frames)
        tokens = data["tokens"].clone()
        tokens[:, 1:] = self.dynamics.mask_id
        pred = self.dynamics.logits(tokens, data["actions"]).argmax(dim=-1)
        pred[:, 0] = data["tokens"][:, 0]
        return {"prediction": _grid([frames, self.tokenizer.decode(pred)])}
