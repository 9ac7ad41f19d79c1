"""The component protocol: every model the engine trains, behind one small interface.

A component is an ``nn.Module`` holding one or more diffusers models plus their training loss:

* ``forward(batch) -> (loss, logs)``: a differentiable scalar and float logs (``"train/loss"``, ...), as in
  DIAMOND's ``Denoiser``. ``batch`` is a collated :class:`~genie_env.data.windows.WindowDataset` item dict.
* ``models() -> dict[str, ModelMixin]``: what a checkpoint saves (``save_pretrained``), by folder name.
* ``samples(batch) -> dict[str, np.ndarray]`` (optional): ``uint8 (H, W, 3)`` images for TensorBoard.
* ``window_config(config)``: how the recording is cut into training items for this component.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from genie_env.data.windows import WindowConfig, WindowDataset
from genie_env.eval import metrics
from training.config import DataConfig

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

    def attach_data(self, dataset: torch.utils.data.Dataset) -> None:
        """Called once with the training dataset before training (components whose model shape depends on the
        data, such as the reward heads' reward classes, build it here). Default: nothing."""

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
    return metrics.to_uint8(images.detach()).cpu().numpy()
