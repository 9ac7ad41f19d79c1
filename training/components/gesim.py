"""GE-Sim components: the Wan VAE (``gesim-vae``) and the multi-view flow-matching DiT on its latents (``gesim``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange

from genie_env.checkpoint import load_model
from genie_env.data.lerobot import LeRobotDataset
from genie_env.data.windows import WindowConfig, WindowDataset
from genie_env.models.gesim import FlowSampler, GeSimVAE, build_dit, build_vae, flow_matching_step
from genie_env.models.gesim.conditioning import batch_conditioning_maps
from genie_env.models.gesim.world import (
    decode_future,
    future_latent_frames,
    group_latent_frames,
    pool_maps,
    sample_latents,
    window_cond_mask,
    window_posterior,
)
from training.components.base import Batch, Component, Logs, to_uint8
from training.config import DataConfig, GeSimConfig, GeSimVAEConfig


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


class TaskWindowDataset(WindowDataset):
    """:class:`WindowDataset` whose items also hold ``task_index`` ``()`` int64: the episode's first task in
    the dataset's ``meta/tasks.jsonl`` (0 when the dataset names no tasks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ids = {t["task"]: int(t["task_index"]) for t in self.dataset.tasks}
        self.episode_task = {
            e: ids.get((self.dataset.episodes[e].get("tasks") or [None])[0], 0) for e in self.episodes
        }

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        out = super().__getitem__(item)
        out["task_index"] = torch.tensor(self.episode_task[int(out["episode_index"])])
        return out


class GeSimComponent(Component):
    """GE-Sim's multi-view DiT trained with flow matching on the latents of a frozen, trained VAE.

    Per window (``n_memory`` memory frames, then ``n_future`` future frames, every camera):

    1. The frozen VAE encodes each memory frame on its own and the future chunk as one clip (or frame by
       frame), sampling the posterior as GE-Sim does: normalised latents ``(B, V, 16, M + F_lat, h, w)``.
       When every latent frame is a single frame (``n_future == 1`` or per-frame encoding) the posterior of each
       recorded frame is computed once and kept (``cache_latents``): the frozen VAE's encoder is most of a CPU
       step otherwise. The posterior is still sampled afresh every step, with the same random draws either way.
    2. Trajectory and ray maps are drawn from the tip states and cameras at pixel resolution, then averaged
       down to latent resolution (:func:`~genie_env.models.gesim.world.pool_maps`, then
       :func:`~genie_env.models.gesim.world.group_latent_frames`).
    3. :func:`~genie_env.models.gesim.flow_matching_step`: one flow time per window, ``x_t = (1 - t) x0 + t eps``
       on the future frames, a little noise on the memory latents, memory frames at timestep ~1e-4, task
       dropout, and the MSE to ``v = eps - x0`` on future frames only.

    Only the DiT is trained and saved; the VAE is a teacher, always in eval mode, without gradients.
    """

    config_class = GeSimConfig
    description = "GE-Sim multi-view DiT, flow matching on frozen-VAE latents (needs a trained gesim-vae)"

    def __init__(self, config: GeSimConfig) -> None:
        super().__init__(config)
        if not config.vae:
            raise ValueError(
                "gesim needs a trained VAE: set component.vae=RUN_OR_CHECKPOINT_DIR (from genie-env train gesim-vae)"
            )
        self.vae = load_model(config.vae, "vae", GeSimVAE).requires_grad_(False)
        future_latent_frames(config.n_future, config.future_encoding, self.vae.temporal_factor)
        overrides: dict[str, Any] = {
            "out_channels": self.vae.config.z_dim,
            "target": config.target,
            "residual_scale": config.residual_scale,
            "memory_attention": config.memory_attention,
        }
        if config.num_tasks is not None:
            overrides["num_tasks"] = config.num_tasks
        if config.patch_size is not None:
            overrides["patch_size"] = tuple(config.patch_size)
        self.dit = build_dit(config.preset, **overrides)
        # Per recorded frame (episode, frame): VAE posterior (V, 2 z, h, w) and latent-resolution maps (V, 9, h, w).
        self._posteriors: dict[tuple[int, int], torch.Tensor] = {}
        self._maps: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def window_config(cls, config: GeSimConfig) -> WindowConfig:
        return WindowConfig(
            n_memory=config.n_memory,
            n_future=config.n_future,
            memory_mode=config.memory_mode,
            max_memory_span=config.max_memory_span,
            max_future_gap=config.max_future_gap,
        )

    @classmethod
    def build_dataset(cls, config: GeSimConfig, data: DataConfig, seed: int) -> WindowDataset:
        if not data.path:
            raise ValueError("no training data: set data.path (genie-env train ... --data DIR)")
        dataset = TaskWindowDataset(
            LeRobotDataset(data.path),
            cls.window_config(config),
            episodes=data.episodes,
            cameras=data.cameras,
            seed=seed,
            cache_episodes=data.cache_episodes,
        )
        for key in ("state", "extrinsics", "intrinsics"):
            if key not in dataset[0]:
                raise ValueError(f"gesim needs tip states and cameras (Fetch data); {data.path} has no {key!r}")
        return dataset

    def train(self, mode: bool = True) -> GeSimComponent:
        super().train(mode)
        self.vae.eval()
        return self

    def models(self) -> dict[str, ModelMixin]:
        return {"dit": self.dit}

    def _n_memory(self, batch: Batch) -> int:
        is_memory = batch["is_memory"]
        n_memory = int(is_memory[0].sum())
        expected = torch.arange(is_memory.shape[1], device=is_memory.device) < n_memory
        if n_memory < 1 or not bool((is_memory == expected).all()):
            raise ValueError("gesim windows need the same number (>= 1) of memory frames first in every item")
        return n_memory

    def _task_ids(self, batch: Batch) -> torch.Tensor:
        frames = batch["frames"]
        task_ids = batch.get("task_index")
        if task_ids is None:
            return torch.zeros(frames.shape[0], dtype=torch.long, device=frames.device)
        if int(task_ids.max()) >= self.dit.config.num_tasks:
            raise ValueError(
                f"task id {int(task_ids.max())} but the DiT has num_tasks={self.dit.config.num_tasks}: "
                "raise component.num_tasks"
            )
        return task_ids.long()

    def _frame_keys(self, batch: Batch) -> list[list[tuple[int, int]]] | None:
        """``(episode, frame)`` of every window frame, ``(B, T)``; ``None`` when not caching."""
        if not self.config.cache_latents or "frame_index" not in batch or "episode_index" not in batch:
            return None
        episodes, index = batch["episode_index"].tolist(), batch["frame_index"].tolist()
        return [[(e, f) for f in row] for e, row in zip(episodes, index, strict=True)]

    @staticmethod
    def _cached(
        cache: dict[tuple[int, int], torch.Tensor],
        keys: list[list[tuple[int, int]]],
        compute: Callable[[list[tuple[int, int]], list[tuple[int, int]]], torch.Tensor],
    ) -> torch.Tensor:
        """Per-frame values ``(B, V, C, T, h, w)`` from ``cache``; ``compute(missing keys, their (b, t))`` fills it
        with ``(N, V, C, h, w)``."""
        todo = list(dict.fromkeys(k for row in keys for k in row if k not in cache))
        if todo:
            where = {k: (b, t) for b, row in enumerate(keys) for t, k in enumerate(row)}
            cache.update(zip(todo, compute(todo, [where[k] for k in todo]), strict=True))
        return torch.stack([torch.stack([cache[k] for k in row], dim=2) for row in keys])

    def _posterior(self, batch: Batch, n_memory: int) -> torch.Tensor:
        """VAE posterior parameters of the windows ``(B, V, 2 z, T_lat, h, w)``, from the cache where possible."""
        cfg, frames, keys = self.config, batch["frames"], self._frame_keys(batch)
        if keys is None or not (cfg.n_future == 1 or cfg.future_encoding == "per_frame"):
            return window_posterior(self.vae, frames, n_memory, cfg.future_encoding)

        def encode(_: list[tuple[int, int]], at: list[tuple[int, int]]) -> torch.Tensor:
            picked = torch.stack([frames[b, :, t] for b, t in at])  # (N, V, 3, H, W)
            params = window_posterior(self.vae, rearrange(picked, "n v c h w -> n v 1 c h w"), 0, "per_frame")
            return params[:, :, :, 0]

        return self._cached(self._posteriors, keys, encode)

    def _maps_at_latent_size(self, batch: Batch, latent_size: tuple[int, int]) -> torch.Tensor:
        """Trajectory and ray maps of every window frame at latent resolution ``(B, V, 9, T, h, w)``."""
        height, width = batch["frames"].shape[-2:]
        state, extrinsics, intrinsics = batch["state"], batch["extrinsics"], batch["intrinsics"]
        keys = self._frame_keys(batch)
        if keys is None:
            traj, ray = batch_conditioning_maps(
                state, extrinsics, intrinsics, height, width, self.config.max_opening, self.config.disc_radius_m
            )
            return pool_maps(traj, ray, latent_size)

        def draw(_: list[tuple[int, int]], at: list[tuple[int, int]]) -> torch.Tensor:
            b, t = (torch.tensor(x) for x in zip(*at, strict=True))
            traj, ray = batch_conditioning_maps(
                state[b, t][:, None],
                extrinsics[b, :, t][:, :, None],
                intrinsics[b],
                height,
                width,
                self.config.max_opening,
                self.config.disc_radius_m,
            )
            return pool_maps(traj, ray, latent_size)[:, :, :, 0]

        return self._cached(self._maps, keys, draw)

    def network_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of windows -> ``(latents, traj, ray, cond_mask)`` at latent resolution.

        Returns:
            Latents ``(B, V, 16, T_lat, h, w)`` (normalised, posterior samples), trajectory maps
            ``(B, V, 3, T_lat, h, w)`` in [-1, 1], ray maps ``(B, V, 6, T_lat, h, w)`` and the memory mask
            ``(B, T_lat)``, with ``T_lat = n_memory + F_lat``.
        """
        cfg, frames = self.config, batch["frames"]
        n_memory = self._n_memory(batch)
        with torch.no_grad():
            # The posterior sample draws from the global torch RNG (saved in checkpoints).
            latents = sample_latents(self.vae, self._posterior(batch, n_memory), sample=True)
            maps = self._maps_at_latent_size(batch, tuple(latents.shape[-2:]))
            traj, ray = group_latent_frames(maps, n_memory, cfg.future_encoding, self.vae.temporal_factor)
        cond_mask = window_cond_mask(frames.shape[0], n_memory, latents.shape[3] - n_memory, frames.device)
        return latents, traj, ray, cond_mask

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        cfg = self.config
        latents, traj, ray, cond_mask = self.network_inputs(batch)
        # Every random draw (times, noise, memory noise, dropout) comes from the global RNG, saved in checkpoints.
        loss, logs = flow_matching_step(
            self.dit,
            latents,
            traj,
            ray,
            cond_mask,
            task_ids=self._task_ids(batch),
            memory_noise=cfg.memory_noise,
            task_dropout=cfg.task_dropout,
            scheme=cfg.flow_schedule,
        )
        # Flow matching assumes unit-scale latents: watch this (the VAE's latents_mean / latents_std fix it).
        return loss, {**logs, "train/latent_std": latents.std().item()}

    @torch.no_grad()
    def samples(self, batch: Batch) -> dict[str, np.ndarray]:
        """Up to 2 windows, one Euler rollout of the future chunk each: per window and view, the real frames
        (memory, then future) above the same memory followed by the generated future."""
        cfg = self.config
        batch = {k: v[:2] for k, v in batch.items()}
        latents, traj, ray, cond_mask = self.network_inputs(batch)
        n_memory = self._n_memory(batch)
        generator = torch.Generator(device=latents.device).manual_seed(0)
        sampler = FlowSampler(num_steps=cfg.sample_steps, schedule=cfg.sample_schedule)
        out = sampler(self.dit, latents, traj, ray, cond_mask, task_ids=self._task_ids(batch), generator=generator)
        generated = decode_future(self.vae, out[:, :, :, n_memory:], cfg.future_encoding)
        real = batch["frames"].float()
        fake = torch.cat([real[:, :, :n_memory], generated], dim=2)
        grid = rearrange(torch.stack([real, fake]), "r b v t c h w -> (b v r h) (t w) c")
        return {"rollout": to_uint8(grid)}
