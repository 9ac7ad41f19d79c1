"""Trainable components: every model the engine trains, behind one small protocol.

A component is an ``nn.Module`` holding one or more diffusers models plus their training loss:

* ``forward(batch) -> (loss, logs)``: a differentiable scalar and float logs (``"train/loss"``, ...), as in
  DIAMOND's ``Denoiser``. ``batch`` is a collated :class:`~genie_env.data.windows.WindowDataset` item dict.
* ``models() -> dict[str, ModelMixin]``: what a checkpoint saves (``save_pretrained``), by folder name.
* ``samples(batch) -> dict[str, np.ndarray]`` (optional): ``uint8 (H, W, 3)`` images for TensorBoard.
* ``window_config(config)``: how the recording is cut into training items for this component.

Registering a component is one line in :data:`COMPONENTS`. Implemented so far:

* ``gesim-vae``: GE-Sim's Wan VAE (:class:`~genie_env.models.gesim.GeSimVAE`) reconstructing single frames.

Still to come (other modules): the GE-Sim DiT trained with flow matching on VAE latents (``gesim``), and the
Genie tokenizer / latent action model / dynamics model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from genie_env.data.windows import WindowConfig, WindowDataset
from genie_env.models.gesim import build_vae
from training.config import DataConfig, GeSimVAEConfig

Batch = dict[str, torch.Tensor]
Logs = dict[str, float]


class Component(nn.Module):
    """Base class of trainable components (see the module docstring for the protocol).

    Attributes:
        config_class: The component's config dataclass (the ``component`` section of a run config).
        description: One line for ``genie-env train --help``.
        find_unused_parameters: Set when some parameters get no gradient in a step (DDP must then search for
            them every step, which costs time).
    """

    config_class: ClassVar[type]
    description: ClassVar[str] = ""
    find_unused_parameters: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def window_config(cls, config: Any) -> WindowConfig:
        """How training items are cut from the recording (default: single frames)."""
        return WindowConfig(n_memory=0, n_future=1)

    @classmethod
    def build_dataset(cls, config: Any, data: DataConfig, seed: int) -> WindowDataset:
        """The training dataset: :class:`WindowDataset` windows of ``data.path``."""
        if not data.path:
            raise ValueError("no training data: set data.path (genie-env train ... --data DIR)")
        return WindowDataset(
            data.path,
            cls.window_config(config),
            episodes=data.episodes,
            cameras=data.cameras,
            seed=seed,
            cache_episodes=data.cache_episodes,
        )

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        """Returns ``(loss, logs)`` for one batch."""
        raise NotImplementedError

    def models(self) -> dict[str, ModelMixin]:
        """The diffusers models a checkpoint saves, by folder name."""
        raise NotImplementedError

    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Optional images to log, ``uint8 (H, W, 3)`` by name (called without gradients, in eval mode)."""
        return {}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[-1, 1]`` float images ``(..., H, W, 3)`` -> ``uint8`` NumPy."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


class GeSimVAEComponent(Component):
    """GE-Sim's Wan VAE trained on single frames with an L1/MSE reconstruction loss plus a KL term.

    Every camera of every window is its own one-frame clip ``(N, 3, 1, H, W)``, so the causal VAE runs its
    first-frame path only. The temporal convolutions (``time_conv``) act between frames of a clip and get no
    gradient from single frames: they are frozen, which keeps DDP from waiting for their gradients.
    """

    config_class = GeSimVAEConfig
    description = "GE-Sim Wan VAE on single frames (L1/MSE reconstruction + KL)"

    def __init__(self, config: GeSimVAEConfig) -> None:
        super().__init__(config)
        self.vae = build_vae(config.preset)
        for name, param in self.vae.named_parameters():
            if ".time_conv." in name:
                param.requires_grad_(False)

    def _frames(self, frames: torch.Tensor) -> torch.Tensor:
        # (B, V, T, 3, H, W) in [-1, 1] -> (B*V*T, 3, 1, H, W): every frame is its own clip.
        x = rearrange(frames, "b v t c h w -> (b v t) c h w").float()
        size = self.config.resolution
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return rearrange(x, "n c h w -> n c 1 h w")

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        cfg = self.config
        x = self._frames(batch["frames"])
        # 1. Encode; the posterior sample draws from the global torch RNG (saved in checkpoints).
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if cfg.sample_posterior else posterior.mode()
        # 2. Decode (diffusers' Wan decoder clamps to [-1, 1]).
        recon = self.vae.decode(z).sample.float()
        # 3. Losses, all per pixel value so their weights do not depend on the resolution.
        l1 = (recon - x).abs().mean()
        mse = (recon - x).pow(2).mean()
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).float().sum() / x.numel()
        loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
        psnr = 10.0 * torch.log10(4.0 / mse.detach().clamp(min=1e-10))  # peak-to-peak 2 in [-1, 1]
        logs = {"train/loss": loss.item(), "train/l1": l1.item(), "train/mse": mse.item(), "train/kl": kl.item()}
        return loss, {**logs, "train/psnr": psnr.item()}

    def models(self) -> dict[str, ModelMixin]:
        return {"vae": self.vae}

    @torch.no_grad()
    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Up to 8 frames (top row) above their reconstructions from the posterior mean (bottom row)."""
        x = self._frames(batch["frames"])[:8]
        recon = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample
        grid = rearrange(torch.stack([x, recon.float()]), "r n c 1 h w -> (r h) (n w) c")
        return {"reconstruction": to_uint8(grid)}


COMPONENTS: dict[str, type[Component]] = {
    "gesim-vae": GeSimVAEComponent,
}
"""Every trainable component by name; add one with ``COMPONENTS["name"] = MyComponent``."""


def get_component(name: str) -> type[Component]:
    """The component class registered as ``name``.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; choose from {sorted(COMPONENTS)}")
    return COMPONENTS[name]
