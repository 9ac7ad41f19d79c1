"""GE-Sim as one world model: the frozen VAE, the flow-matching DiT and its sampler, saved as a bundle.

A **bundle** is a directory::

    BUNDLE/world_model.json   {"type": "gesim", "sampling": {"steps", "schedule"}, "cameras", "n_memory", ...}
    BUNDLE/vae/               GeSimVAE (save_pretrained)
    BUNDLE/dit/               MultiViewDiT (save_pretrained)

written atomically like a checkpoint (:mod:`genie_env.checkpoint`). :func:`assemble_gesim_bundle` builds one
from a ``gesim-vae`` run and a ``gesim`` run; :func:`load_world_model` reads a bundle, or a ``gesim`` run /
checkpoint directly (its config names the VAE run).

Frames, poses and cameras follow :class:`~genie_env.data.windows.WindowDataset`: frames ``(B, V, T, 3, H, W)``
in [-1, 1], tip states ``(B, T, 8)`` (xyz, quaternion xyzw, gripper opening), camera-to-base extrinsics
``(B, V, T, 4, 4)`` (OpenCV) and intrinsics ``(B, V, 3, 3)`` for ``(H, W)`` images. Everything is batched over
the leading ``B`` (windows, or environments of a vector env).

How a window becomes network input (shared with the ``gesim`` training component, so both agree):

* every memory frame is VAE-encoded on its own (one latent frame each); the ``chunk`` future frames either
  as one causal clip (``"clip"``: ``chunk`` must be 1 or ``4n + 1``, giving ``n + 1`` latent frames, as
  GE-Sim) or frame by frame (``"per_frame"``: one latent frame per frame);
* trajectory and ray maps are drawn at pixel resolution (:func:`batch_conditioning_maps`), then box-averaged
  to latent resolution (GE-Sim resizes bilinearly without antialiasing, which at 8x would drop most of a
  64x64 map's few-pixel gripper disc). With clip encoding, a future latent frame gets the mean map of the
  frames it encodes (frame 0 alone, then groups of 4, the causal VAE's grouping; GE-Sim resamples
  trilinearly instead). Trajectory maps go from [0, 1] to [-1, 1].

Rollouts (§3 of the GE-Sim notes): the first frames are given; each step generates ``chunk`` frames from
``n_memory`` memory frames re-chosen over the whole history so far, evenly spaced from frame 0 to the newest
frame (:func:`genie_env.data.windows.select_memory`, ``"uniform"``), re-encoded from pixels (generated frames
included; every frame once, with the posterior mean, where training samples the posterior as GE-Sim). Poses
past the episode end repeat the last one, and the extra frames are dropped.

Before training the DiT, :func:`calibrate_vae` stores a trained VAE's latent statistics in its config, so that
the normalised latents the DiT sees have about unit scale (as the Wan 2.1 statistics give GE-Sim).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange, reduce, repeat
from torch import nn
from tqdm.auto import tqdm

from genie_env.checkpoint import CheckpointError, load_meta, load_model, resolve_checkpoint, save_checkpoint
from genie_env.data.lerobot import LeRobotDataset
from genie_env.data.windows import WindowConfig, select_memory
from genie_env.eval.metrics import from_uint8
from genie_env.models.bundle import WORLD_MODEL_FILE, load_bundle_model, read_bundle_info, save_bundle
from genie_env.models.gesim.conditioning import DISC_RADIUS_M, batch_conditioning_maps
from genie_env.models.gesim.dit import INPUT_CHANNELS, MultiViewDiT
from genie_env.models.gesim.flow import FlowSampler
from genie_env.models.gesim.vae import GeSimVAE

FutureEncoding = Literal["clip", "per_frame"]
Schedule = Literal["linear", "karras"]
Generator = torch.Generator | list[torch.Generator] | None


# --- window <-> network input ------------------------------------------------------------------------------


def future_latent_frames(n_future: int, encoding: FutureEncoding, temporal_factor: int) -> int:
    """Latent frames of a future chunk of ``n_future`` frames.

    Raises:
        ValueError: For an unknown encoding, or a clip length the causal VAE cannot encode (``1`` or
            ``temporal_factor * n + 1``).
    """
    if n_future < 1:
        raise ValueError(f"a future chunk needs at least one frame, got {n_future=}")
    if encoding == "per_frame":
        return n_future
    if encoding != "clip":
        raise ValueError(f"future encoding must be 'clip' or 'per_frame', got {encoding!r}")
    if (n_future - 1) % temporal_factor:
        raise ValueError(
            f"clip encoding needs 1 or {temporal_factor}n + 1 future frames (the causal VAE), got {n_future}; "
            "use another chunk length or future_encoding='per_frame'"
        )
    return (n_future - 1) // temporal_factor + 1


def window_posterior(vae: GeSimVAE, frames: torch.Tensor, n_memory: int, encoding: FutureEncoding) -> torch.Tensor:
    """The VAE posterior of a window's latents: memory frames one by one, then the future chunk.

    Args:
        vae: The (frozen) VAE.
        frames: ``(B, V, T, 3, H, W)`` in [-1, 1], memory frames first.
        n_memory: Number of memory frames ``M`` at the start of ``T``.
        encoding: Future encoding (see the module docstring).

    Returns:
        Raw (not normalised) posterior parameters ``(B, V, 2 z_dim, M + F_lat, H / 8, W / 8)``: the mean, then the
        log-variance, as diffusers' ``DiagonalGaussianDistribution`` takes them (``sample_latents`` draws from them).
    """
    if frames.ndim != 6 or frames.shape[3] != 3:
        raise ValueError(f"frames must be (B, V, T, 3, H, W), got {tuple(frames.shape)}")
    batch, _, frames_count = frames.shape[:3]
    if not 0 <= n_memory < frames_count:
        raise ValueError(f"need 0 <= n_memory < T = {frames_count}, got {n_memory=}")
    future_latent_frames(frames_count - n_memory, encoding, vae.temporal_factor)  # validates the length
    x = rearrange(frames.float(), "b v t c h w -> (b v) c t h w")
    parts = []
    if n_memory:
        memory = rearrange(x[:, :, :n_memory], "n c t h w -> (n t) c 1 h w")
        parts.append(rearrange(vae.encode(memory).latent_dist.parameters, "(n t) c 1 h w -> n c t h w", t=n_memory))
    future = x[:, :, n_memory:]
    if encoding == "per_frame":
        steps = future.shape[2]
        future = rearrange(future, "n c t h w -> (n t) c 1 h w")
        parts.append(rearrange(vae.encode(future).latent_dist.parameters, "(n t) c 1 h w -> n c t h w", t=steps))
    else:
        parts.append(vae.encode(future).latent_dist.parameters)
    return rearrange(torch.cat(parts, dim=2), "(b v) c t h w -> b v c t h w", b=batch)


def sample_latents(
    vae: GeSimVAE, posterior: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Normalised latents from posterior parameters (:func:`window_posterior`).

    Args:
        vae: The VAE (for its latent statistics).
        posterior: ``(B, V, 2 z_dim, T, h, w)`` mean and log-variance.
        sample: Draw from the posterior (training, as GE-Sim) or take its mean.
        generator: Random generator of the draw.

    Returns:
        ``(B, V, z_dim, T, h, w)`` normalised latents.
    """
    batch = posterior.shape[0]
    dist = DiagonalGaussianDistribution(rearrange(posterior, "b v c t h w -> (b v) c t h w"))
    z = dist.sample(generator=generator) if sample else dist.mode()
    return rearrange(vae.normalize_latents(z), "(b v) c t h w -> b v c t h w", b=batch)


def decode_future(vae: GeSimVAE, latents: torch.Tensor, encoding: FutureEncoding) -> torch.Tensor:
    """Frames of a future chunk from its normalised latents.

    Args:
        vae: The VAE.
        latents: ``(B, V, 16, F_lat, h, w)``.
        encoding: How the chunk was encoded.

    Returns:
        ``(B, V, F, 3, 8h, 8w)`` in [-1, 1], ``F = F_lat`` (per frame) or ``4 (F_lat - 1) + 1`` (clip).
    """
    batch, views = latents.shape[:2]
    if encoding == "per_frame":
        z = rearrange(latents, "b v c t h w -> (b v t) c 1 h w")
        x = rearrange(vae.decode_latents(z), "(b v t) c 1 h w -> b v t c h w", b=batch, v=views)
    else:
        clips = vae.decode_latents(rearrange(latents, "b v c t h w -> (b v) c t h w"))
        x = rearrange(clips, "(b v) c t h w -> b v t c h w", b=batch)
    return x.float().clamp(-1.0, 1.0)


def pool_maps(traj: torch.Tensor, ray: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Pixel-resolution maps, frame by frame, box-averaged to latent resolution.

    Args:
        traj: Trajectory maps ``(B, V, 3, T, H, W)`` in [0, 1].
        ray: Ray maps ``(B, V, 6, T, H, W)``.
        latent_size: ``(h, w)``; ``H`` and ``W`` must be multiples of it.

    Returns:
        ``(B, V, 9, T, h, w)``: the trajectory map in [-1, 1], then the ray map.
    """
    batch, views, _, _, height, width = traj.shape
    h, w = latent_size
    if height % h or width % w:
        raise ValueError(f"map size {(height, width)} is not a multiple of the latent size {(h, w)}")
    maps = torch.cat([traj.float() * 2.0 - 1.0, ray.float()], dim=2)
    x = rearrange(maps, "b v c t hh ww -> (b v t) c hh ww")
    x = F.adaptive_avg_pool2d(x, (h, w))  # an exact box average for integer factors
    return rearrange(x, "(b v t) c h w -> b v c t h w", b=batch, v=views)


def group_latent_frames(
    maps: torch.Tensor, n_memory: int, encoding: FutureEncoding, temporal_factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame latent-resolution maps (:func:`pool_maps`) -> one map per latent frame, split into trajectory and ray.

    Memory frames and per-frame future frames keep their own map; a clip-encoded future chunk gets, per latent frame,
    the mean map of the frames it encodes (frame 0 alone, then groups of ``temporal_factor``).

    Args:
        maps: ``(B, V, 9, M + F, h, w)``.
        n_memory: Number of memory frames ``M``.
        encoding: Future encoding.
        temporal_factor: The VAE's temporal compression.

    Returns:
        ``(traj, ray)``: ``(B, V, 3, M + F_lat, h, w)`` and ``(B, V, 6, M + F_lat, h, w)``.
    """
    n_lat = future_latent_frames(maps.shape[3] - n_memory, encoding, temporal_factor)
    memory, future = maps[:, :, :, :n_memory], maps[:, :, :, n_memory:]
    if future.shape[3] != n_lat:
        first, rest = future[:, :, :, :1], future[:, :, :, 1:]
        rest = reduce(rest, "b v c (g k) h w -> b v c g h w", "mean", k=temporal_factor)
        future = torch.cat([first, rest], dim=3)
    out = torch.cat([memory, future], dim=3)
    return out[:, :, :3], out[:, :, 3:]


def window_cond_mask(batch: int, n_memory: int, n_future_latent: int, device: torch.device | str) -> torch.Tensor:
    """Memory indicator ``(B, M + F_lat)``: 1 on the ``M`` memory latent frames, 0 on the future ones."""
    mask = torch.cat([torch.ones(n_memory), torch.zeros(n_future_latent)]).to(device)
    return repeat(mask, "t -> b t", b=batch)


# --- the world model ---------------------------------------------------------------------------------------


@dataclass
class GeSimRollout:
    """What :meth:`GeSimWorldModel.rollout` generated.

    Attributes:
        frames: ``(B, V, T, 3, H, W)`` in [-1, 1]: the given first frames, then the generated ones.
        n_given: How many leading frames were given (copied from the input).
        chunk_starts: First frame index of every generated chunk.
        memory_indices: Per chunk, the frame indices used as memory (sorted; the newest is ``start - 1``).
    """

    frames: torch.Tensor
    n_given: int
    chunk_starts: list[int] = field(default_factory=list)
    memory_indices: list[list[int]] = field(default_factory=list)


class GeSimWorldModel(nn.Module):
    """GE-Sim's VAE + multi-view DiT + sampler settings, generating future frames of every camera.

    Args:
        vae: Trained VAE (kept frozen, eval mode).
        dit: Trained DiT (eval mode).
        cameras: Camera names in the DiT's view order (view id ``i`` = ``cameras[i]``).
        n_memory: Memory frames per prediction.
        chunk: Frames generated per prediction (the DiT's training ``n_future``).
        future_encoding: ``"clip"`` or ``"per_frame"`` (as in training).
        steps: Default number of sampler steps.
        schedule: Default sampler schedule, ``"linear"`` or ``"karras"``.
        tasks: Task texts by task id (from the training dataset); empty if unknown.
        max_opening: Gripper opening drawn darkest in the trajectory maps (Fetch: 0.1 m).
        disc_radius_m: Physical radius of the tip disc in the trajectory maps (metres), as in training.
        fps: Frame rate of the training data (for videos), if known.
        provenance: Where the networks came from (runs, step), kept in ``world_model.json``.
    """

    def __init__(
        self,
        vae: GeSimVAE,
        dit: MultiViewDiT,
        *,
        cameras: Sequence[str],
        n_memory: int = 4,
        chunk: int = 1,
        future_encoding: FutureEncoding = "clip",
        steps: int = 10,
        schedule: Schedule = "linear",
        tasks: Sequence[str] = (),
        max_opening: float = 0.1,
        disc_radius_m: float = DISC_RADIUS_M,
        fps: float | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not cameras:
            raise ValueError("a GE-Sim world model needs at least one camera name")
        if len(cameras) > dit.config.max_views:
            raise ValueError(f"{len(cameras)} cameras but the DiT has max_views={dit.config.max_views}")
        if n_memory < 1:
            raise ValueError(f"n_memory must be >= 1, got {n_memory}")
        if steps < 1 or schedule not in ("linear", "karras"):
            raise ValueError(f"need steps >= 1 and schedule 'linear' or 'karras', got {steps=}, {schedule=}")
        if dit.config.in_channels != INPUT_CHANNELS or dit.config.out_channels != vae.config.z_dim:
            raise ValueError(
                f"DiT channels ({dit.config.in_channels} in, {dit.config.out_channels} out) do not fit a VAE with "
                f"z_dim={vae.config.z_dim}"
            )
        future_latent_frames(chunk, future_encoding, vae.temporal_factor)  # validates the chunk
        self.vae = vae.eval().requires_grad_(False)
        self.dit = dit.eval().requires_grad_(False)
        self.cameras = list(cameras)
        self.n_memory, self.chunk, self.future_encoding = int(n_memory), int(chunk), future_encoding
        self.steps, self.schedule = int(steps), schedule
        self.tasks = list(tasks)
        if disc_radius_m <= 0:
            raise ValueError(f"disc_radius_m must be > 0, got {disc_radius_m}")
        self.max_opening, self.disc_radius_m, self.fps = float(max_opening), float(disc_radius_m), fps
        self.provenance = dict(provenance or {})
        self.eval()

    def train(self, mode: bool = True) -> GeSimWorldModel:
        """Stays in eval mode: the world model is for inference only."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.dit.parameters()).device

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel (8)."""
        return self.vae.spatial_factor

    @property
    def default_task_id(self) -> int:
        """Task 0 when the training data had tasks, else the DiT's "no task" id."""
        return 0 if self.tasks else self.dit.null_task_id

    def task_id(self, task: str) -> int:
        """Task id of a task text from the training data.

        Raises:
            ValueError: For a task the model was not trained on.
        """
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; the model knows {self.tasks}")
        return self.tasks.index(task)

    def describe(self) -> dict[str, Any]:
        """The ``world_model.json`` content."""
        return {
            "type": "gesim",
            "sampling": {"steps": self.steps, "schedule": self.schedule},
            "cameras": self.cameras,
            "n_memory": self.n_memory,
            "chunk": self.chunk,
            "future_encoding": self.future_encoding,
            "tasks": self.tasks,
            "max_opening": self.max_opening,
            "disc_radius_m": self.disc_radius_m,
            "fps": self.fps,
            "provenance": self.provenance,
        }

    # --- persistence ---------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Writes the bundle atomically (an existing bundle at ``path`` is replaced whole or not at all)."""
        return save_bundle(path, {"vae": self.vae, "dit": self.dit}, self.describe())

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None
    ) -> GeSimWorldModel:
        """Loads a bundle written by :meth:`save_pretrained` or :func:`assemble_gesim_bundle`.

        Raises:
            CheckpointError: If a file is missing or corrupt, or the bundle is not a GE-Sim bundle.
        """
        spec = read_bundle_info(path)
        spec_file = Path(path) / WORLD_MODEL_FILE
        if spec["type"] != "gesim":
            raise CheckpointError(f"{spec_file} describes a {spec['type']!r} world model, not 'gesim'")
        vae = load_bundle_model(path, "vae", GeSimVAE)
        dit = load_bundle_model(path, "dit", MultiViewDiT)
        sampling = spec.get("sampling", {})
        try:
            world = cls(
                vae,
                dit,
                cameras=spec["cameras"],
                n_memory=spec["n_memory"],
                chunk=spec.get("chunk", 1),
                future_encoding=spec.get("future_encoding", "clip"),
                steps=sampling.get("steps", 10),
                schedule=sampling.get("schedule", "linear"),
                tasks=spec.get("tasks", []),
                max_opening=spec.get("max_opening", 0.1),
                disc_radius_m=spec.get("disc_radius_m", DISC_RADIUS_M),
                fps=spec.get("fps"),
                provenance=spec.get("provenance"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid world-model description {spec_file}: {exc!r}") from exc
        return world.to(device) if device is not None else world

    @classmethod
    def from_training_runs(
        cls,
        dit_run: str | os.PathLike[str],
        vae_run: str | os.PathLike[str] | None = None,
        *,
        steps: int = 10,
        schedule: Schedule = "linear",
        cameras: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> GeSimWorldModel:
        """Builds the world model from a ``gesim`` run (or checkpoint) and its VAE run.

        Args:
            dit_run: Run or checkpoint directory of the ``gesim`` component (EMA weights when present).
            vae_run: Run or checkpoint of the ``gesim-vae`` component; default: the one the DiT was trained with
                (``component.vae`` of its config).
            steps: Default sampler steps.
            schedule: Default sampler schedule.
            cameras: Camera names in view order; default: the run's ``data.cameras``, else the dataset's.
            tasks: Task texts by id; default: the training dataset's ``meta/tasks.jsonl`` if readable.
            device: Device to move the models to.

        Raises:
            CheckpointError: If the run is not a ``gesim`` run or a model cannot be loaded.
            ValueError: If the cameras cannot be determined.
        """
        checkpoint = resolve_checkpoint(dit_run)
        meta = load_meta(checkpoint)
        if meta.get("component") not in (None, "gesim"):
            raise CheckpointError(f"{checkpoint} holds component {meta['component']!r}, not 'gesim'")
        config = meta.get("config") or {}
        component, data = config.get("component") or {}, config.get("data") or {}
        vae_path = vae_run if vae_run is not None else component.get("vae")
        if not vae_path:
            raise CheckpointError(f"{checkpoint}: no VAE given and the run config names none (component.vae)")
        dit = load_model(checkpoint, "dit", MultiViewDiT)
        vae = load_model(vae_path, "vae", GeSimVAE)
        dataset = None
        if data.get("path") and Path(data["path"]).is_dir():
            dataset = LeRobotDataset(data["path"])
        if cameras is None:
            cameras = data.get("cameras") or (dataset.camera_names if dataset is not None else None)
        if not cameras:
            raise ValueError(f"cannot tell the camera order of {checkpoint}: pass cameras=[...]")
        if tasks is None:
            rows = sorted(dataset.tasks, key=lambda t: int(t["task_index"])) if dataset is not None else []
            tasks = [str(t["task"]) for t in rows]
        world = cls(
            vae,
            dit,
            cameras=cameras,
            n_memory=int(component.get("n_memory", 4)),
            chunk=int(component.get("n_future", 1)),
            future_encoding=component.get("future_encoding", "clip"),
            steps=steps,
            schedule=schedule,
            tasks=tasks,
            max_opening=float(component.get("max_opening", 0.1)),
            disc_radius_m=float(component.get("disc_radius_m", DISC_RADIUS_M)),
            fps=dataset.fps if dataset is not None else None,
            provenance={"dit": str(checkpoint), "vae": str(resolve_checkpoint(vae_path)), "step": meta.get("step")},
        )
        return world.to(device) if device is not None else world

    # --- prediction ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Memory latents of frames: ``(B, V, T, 3, H, W)`` in [-1, 1] -> ``(B, V, 16, T, H/8, W/8)``.

        Each frame is encoded on its own (posterior mean, so the result is deterministic).
        """
        if frames.ndim != 6 or frames.shape[3] != 3:
            raise ValueError(f"frames must be (B, V, T, 3, H, W), got {tuple(frames.shape)}")
        batch = frames.shape[0]
        x = rearrange(frames.to(self.device, torch.float32), "b v t c h w -> (b v) c t h w")
        z = self.vae.encode_frames(x, per_frame=True, sample=False)
        return rearrange(z, "(b v) c t h w -> b v c t h w", b=batch)

    def _check_views(self, name: str, x: torch.Tensor, ndim: int) -> None:
        if x.ndim != ndim or x.shape[1] != len(self.cameras):
            raise ValueError(
                f"{name} must have {ndim} dims with V={len(self.cameras)} views ({self.cameras}) at dim 1, "
                f"got {tuple(x.shape)}"
            )

    def _task_ids(self, task_ids: torch.Tensor | None, batch: int) -> torch.Tensor:
        if task_ids is None:
            return torch.full((batch,), self.default_task_id, dtype=torch.long, device=self.device)
        task_ids = task_ids.to(self.device, torch.long)
        if tuple(task_ids.shape) != (batch,):
            raise ValueError(f"task_ids must have shape ({batch},), got {tuple(task_ids.shape)}")
        if task_ids.min() < 0 or task_ids.max() > self.dit.null_task_id:
            raise ValueError(f"task ids must be in [0, {self.dit.null_task_id}], got {task_ids.tolist()}")
        return task_ids

    @torch.no_grad()
    def predict_next_latents(
        self,
        memory_latents: torch.Tensor,
        memory_states: torch.Tensor,
        memory_extrinsics: torch.Tensor,
        next_states: torch.Tensor,
        next_extrinsics: torch.Tensor,
        intrinsics: torch.Tensor,
        *,
        task_ids: torch.Tensor | None = None,
        steps: int | None = None,
        schedule: Schedule | None = None,
        generator: Generator = None,
    ) -> torch.Tensor:
        """Samples the latents of the next ``chunk`` frames (see :meth:`predict_next` for the arguments).

        Returns:
            ``(B, V, 16, F_lat, h, w)`` normalised latents of the future chunk.
        """
        self._check_views("memory_latents", memory_latents, 6)
        self._check_views("memory_extrinsics", memory_extrinsics, 5)
        self._check_views("next_extrinsics", next_extrinsics, 5)
        self._check_views("intrinsics", intrinsics, 4)
        batch, _, _, n_mem, h, w = memory_latents.shape
        n_next = next_states.shape[1] if next_states.ndim == 3 else -1
        if tuple(memory_states.shape) != (batch, n_mem, 8) or tuple(next_states.shape) != (batch, n_next, 8):
            raise ValueError(
                f"memory_states must be ({batch}, {n_mem}, 8) and next_states ({batch}, F, 8), "
                f"got {tuple(memory_states.shape)} and {tuple(next_states.shape)}"
            )
        states = torch.cat([memory_states, next_states], dim=1)
        extrinsics = torch.cat([memory_extrinsics, next_extrinsics], dim=2)
        maps = self.frame_maps(states, extrinsics, intrinsics, (h, w))
        return self.sample_future(
            memory_latents, maps, task_ids=task_ids, steps=steps, schedule=schedule, generator=generator
        )

    def frame_maps(
        self, states: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor, latent_size: tuple[int, int]
    ) -> torch.Tensor:
        """Every frame's trajectory and ray maps at latent resolution, ``(B, V, 9, T, h, w)`` (:func:`pool_maps`).

        A frame's maps depend on its own tip state and cameras only, so callers may compute them once per frame and
        keep them (the env keeps its memory frames' maps) for :meth:`sample_future`.

        Args:
            states: ``(B, T, 8)`` tip states.
            extrinsics: ``(B, V, T, 4, 4)`` cameras.
            intrinsics: ``(B, V, 3, 3)``.
            latent_size: ``(h, w)`` of the latents.
        """
        h, w = latent_size
        height, width = h * self.spatial_factor, w * self.spatial_factor
        device = self.device
        traj, ray = batch_conditioning_maps(
            states.to(device),
            extrinsics.to(device),
            intrinsics.to(device),
            height,
            width,
            self.max_opening,
            self.disc_radius_m,
        )
        return pool_maps(traj, ray, latent_size)

    @torch.no_grad()
    def sample_future(
        self,
        memory_latents: torch.Tensor,
        maps: torch.Tensor,
        *,
        task_ids: torch.Tensor | None = None,
        steps: int | None = None,
        schedule: Schedule | None = None,
        generator: Generator = None,
    ) -> torch.Tensor:
        """Samples the future chunk's latents from memory latents and per-frame maps (:meth:`frame_maps`).

        Args:
            memory_latents: ``(B, V, 16, M, h, w)``.
            maps: ``(B, V, 9, M + F, h, w)``: the memory frames' maps, then the ``F`` future frames'.
            task_ids, steps, schedule, generator: As :meth:`predict_next`.

        Returns:
            ``(B, V, 16, F_lat, h, w)`` normalised latents of the future chunk.
        """
        batch, _, _, n_mem, h, w = memory_latents.shape
        if maps.ndim != 6 or maps.shape[:3] != (batch, len(self.cameras), 9) or maps.shape[3] <= n_mem:
            raise ValueError(
                f"maps must be ({batch}, {len(self.cameras)}, 9, {n_mem} + F, {h}, {w}), got {tuple(maps.shape)}"
            )
        device = self.device
        n_lat = future_latent_frames(maps.shape[3] - n_mem, self.future_encoding, self.vae.temporal_factor)
        traj, ray = group_latent_frames(maps.to(device), n_mem, self.future_encoding, self.vae.temporal_factor)
        cond_mask = window_cond_mask(batch, n_mem, n_lat, device)
        future = torch.zeros(batch, len(self.cameras), memory_latents.shape[2], n_lat, h, w, device=device)
        latents = torch.cat([memory_latents.to(device, torch.float32), future], dim=3)
        sampler = FlowSampler(num_steps=steps or self.steps, schedule=schedule or self.schedule)
        out = sampler(
            self.dit, latents, traj, ray, cond_mask, task_ids=self._task_ids(task_ids, batch), generator=generator
        )
        return out[:, :, :, n_mem:]

    @torch.no_grad()
    def predict_chunk(
        self,
        latents: torch.Tensor,
        states: torch.Tensor,
        extrinsics: torch.Tensor,
        intrinsics: torch.Tensor,
        memory: np.ndarray,
        start: int,
        chunk: int,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Frames ``start .. start + chunk - 1`` of an episode from its frames at ``memory``.

        Args:
            latents: ``(B, V, 16, T, h, w)`` episode latents (only the ``memory`` frames are read).
            states: ``(B, T, 8)`` tip states of the whole episode.
            extrinsics: ``(B, V, T, 4, 4)`` cameras of the whole episode.
            intrinsics: ``(B, V, 3, 3)``.
            memory: memory frame indices (e.g. :meth:`memory_indices`).
            start: first frame to generate.
            chunk: frames to generate; poses past the episode's end repeat the last one (GE-Sim), so the final
                chunk can be full length.
            **kwargs: ``task_ids``, ``steps``, ``schedule``, ``generator`` of :meth:`predict_next`.

        Returns:
            ``(B, V, chunk, 3, H, W)`` as :meth:`predict_next`.
        """
        future = np.minimum(np.arange(start, start + chunk), states.shape[1] - 1)
        return self.predict_next(
            latents[:, :, :, memory],
            states[:, memory],
            extrinsics[:, :, memory],
            states[:, future],
            extrinsics[:, :, future],
            intrinsics,
            **kwargs,
        )

    @torch.no_grad()
    def predict_next(
        self,
        memory_latents: torch.Tensor,
        memory_states: torch.Tensor,
        memory_extrinsics: torch.Tensor,
        next_states: torch.Tensor,
        next_extrinsics: torch.Tensor,
        intrinsics: torch.Tensor,
        *,
        task_ids: torch.Tensor | None = None,
        steps: int | None = None,
        schedule: Schedule | None = None,
        generator: Generator = None,
    ) -> torch.Tensor:
        """Generates the next frames of every view from memory latents and the poses and cameras.

        Args:
            memory_latents: ``(B, V, 16, M, h, w)`` from :meth:`encode` (any ``M``; usually ``n_memory``).
            memory_states: ``(B, M, 8)`` tip states at the memory frames.
            memory_extrinsics: ``(B, V, M, 4, 4)`` camera-to-base at the memory frames.
            next_states: ``(B, F, 8)`` tip states of the frames to generate (``F`` = :attr:`chunk` usually; with
                clip encoding 1 or ``4n + 1``).
            next_extrinsics: ``(B, V, F, 4, 4)`` cameras of the frames to generate.
            intrinsics: ``(B, V, 3, 3)`` for ``(8h, 8w)`` images.
            task_ids: ``(B,)`` task ids (default :attr:`default_task_id`).
            steps: Sampler steps (default :attr:`steps`).
            schedule: Sampler schedule (default :attr:`schedule`).
            generator: A generator, or one per batch row (the rows are then independent of each other).

        Returns:
            ``(B, V, F, 3, 8h, 8w)`` frames in [-1, 1].
        """
        latents = self.predict_next_latents(
            memory_latents,
            memory_states,
            memory_extrinsics,
            next_states,
            next_extrinsics,
            intrinsics,
            task_ids=task_ids,
            steps=steps,
            schedule=schedule,
            generator=generator,
        )
        return decode_future(self.vae, latents, self.future_encoding)

    def memory_indices(self, num_past: int) -> np.ndarray:
        """Memory frames for a chunk starting at frame ``num_past``: ``n_memory`` frames evenly spaced over
        ``[0, num_past - 1]`` (rounded; repeats while the history is short), always including ``num_past - 1``."""
        config = WindowConfig(n_memory=self.n_memory, n_future=1, memory_mode="uniform")
        return select_memory(num_past, config, np.random.default_rng(0))  # "uniform" draws nothing

    @torch.no_grad()
    def rollout(
        self,
        first_frames: torch.Tensor,
        states: torch.Tensor,
        extrinsics: torch.Tensor,
        intrinsics: torch.Tensor,
        *,
        chunk: int | None = None,
        task_ids: torch.Tensor | None = None,
        steps: int | None = None,
        schedule: Schedule | None = None,
        generator: Generator = None,
        progress: bool = False,
        on_chunk: Callable[[int], None] | None = None,
    ) -> GeSimRollout:
        """Generates an episode chunk after chunk from its first frames and its recorded poses and cameras.

        Args:
            first_frames: ``(B, V, K, 3, H, W)`` given frames ``0 .. K-1`` in [-1, 1] (``K >= 1``).
            states: ``(B, T, 8)`` tip states of all ``T`` frames (``T > K``).
            extrinsics: ``(B, V, T, 4, 4)`` cameras of all frames.
            intrinsics: ``(B, V, 3, 3)`` for ``(H, W)`` images.
            chunk: Frames per prediction (default :attr:`chunk`; clip encoding needs 1 or ``4n + 1``).
            task_ids: ``(B,)`` task ids.
            steps: Sampler steps.
            schedule: Sampler schedule.
            generator: A generator, or one per batch row; the rollout is a deterministic function of it.
            progress: Show a progress bar over chunks.
            on_chunk: Called after every chunk with the number of new frames it kept.

        Returns:
            The frames ``(B, V, T, 3, H, W)`` on the CPU and, per chunk, the memory frames it used.
        """
        self._check_views("first_frames", first_frames, 6)
        self._check_views("extrinsics", extrinsics, 5)
        batch, views, given = first_frames.shape[:3]
        total = states.shape[1] if states.ndim == 3 else -1
        if given < 1 or tuple(states.shape) != (batch, total, 8) or total <= given:
            raise ValueError(
                f"need K >= 1 first frames and states (B={batch}, T > K={given}, 8), got {tuple(states.shape)}"
            )
        if tuple(extrinsics.shape) != (batch, views, total, 4, 4):
            raise ValueError(f"extrinsics must be {(batch, views, total, 4, 4)}, got {tuple(extrinsics.shape)}")
        chunk = self.chunk if chunk is None else int(chunk)
        future_latent_frames(chunk, self.future_encoding, self.vae.temporal_factor)
        height, width = first_frames.shape[-2:]
        sf = self.spatial_factor
        if height % sf or width % sf:
            raise ValueError(f"frame size {(height, width)} must be divisible by {sf}")

        frames = torch.zeros(batch, views, total, 3, height, width)
        frames[:, :, :given] = first_frames.float().cpu()
        latents = torch.zeros(batch, views, self.vae.config.z_dim, total, height // sf, width // sf)
        encoded = np.zeros(total, dtype=bool)
        result = GeSimRollout(frames=frames, n_given=given)
        starts = list(range(given, total, chunk))
        for start in tqdm(starts, desc="gesim rollout", unit="chunk", disable=not progress):
            memory = self.memory_indices(start)
            todo = sorted(set(memory.tolist()) - set(np.flatnonzero(encoded).tolist()))
            if todo:
                latents[:, :, :, todo] = self.encode(frames[:, :, todo]).cpu()
                encoded[todo] = True
            new = self.predict_chunk(
                latents,
                states,
                extrinsics,
                intrinsics,
                memory,
                start,
                chunk,
                task_ids=task_ids,
                steps=steps,
                schedule=schedule,
                generator=generator,
            )
            stop = min(start + chunk, total)
            frames[:, :, start:stop] = new[:, :, : stop - start].cpu()
            result.chunk_starts.append(start)
            result.memory_indices.append(memory.tolist())
            if on_chunk is not None:
                on_chunk(stop - start)
        return result


def episode_inputs(dataset: LeRobotDataset, index: int, cameras: Sequence[str]) -> dict[str, torch.Tensor]:
    """One recorded episode as world-model inputs.

    Args:
        dataset: A Fetch-style dataset (tip state, per-frame extrinsics, intrinsics).
        index: Episode index.
        cameras: Cameras in the model's view order.

    Returns:
        ``frames`` ``(V, T, 3, H, W)`` uint8, ``states`` ``(T, 8)``, ``extrinsics`` ``(V, T, 4, 4)``,
        ``intrinsics`` ``(V, 3, 3)`` (float32).

    Raises:
        ValueError: If the dataset lacks a camera, the tip state or the camera geometry.
    """
    missing = [c for c in cameras if c not in dataset.camera_names]
    if missing:
        raise ValueError(f"cameras {missing} not in dataset {dataset.root} (it has {dataset.camera_names})")
    intrinsics = [dataset.intrinsics(c) for c in cameras]
    if any(k is None for k in intrinsics):
        raise ValueError(f"dataset {dataset.root} has no camera intrinsics: GE-Sim needs Fetch-style camera geometry")
    data = dataset.load_episode(index)
    keys = ["observation.state", *(f"observation.cameras.{c}.extrinsics" for c in cameras)]
    absent = [k for k in keys if k not in data]
    if absent:
        raise ValueError(f"dataset {dataset.root} has no {absent}: GE-Sim needs the tip state and camera extrinsics")
    frames = np.stack([data[f"observation.images.{c}"] for c in cameras])  # (V, T, H, W, 3)
    return {
        "frames": torch.from_numpy(rearrange(frames, "v t h w c -> v t c h w").copy()),
        "states": torch.from_numpy(data["observation.state"]).float(),
        "extrinsics": torch.from_numpy(np.stack([data[k] for k in keys[1:]])).float(),
        "intrinsics": torch.from_numpy(np.stack(intrinsics)).float(),
    }


@torch.no_grad()
def calibrate_vae(
    vae_run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    max_frames: int = 2048,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> Path:
    """Writes a copy of a trained VAE whose ``latents_mean`` / ``latents_std`` make its latents unit-scale.

    Flow matching assumes normalised latents of about unit variance (GE-Sim uses the Wan 2.1 statistics); a VAE
    trained here starts with mean 0 and std 1, so its raw latents can be far from that. This measures the
    per-channel mean and standard deviation of the posterior means of about ``max_frames`` frames (every camera,
    evenly spaced in every episode) and saves the VAE with them as a checkpoint at ``out``: train the
    ``gesim`` component with ``component.vae=OUT``.

    Args:
        vae_run: ``gesim-vae`` run or checkpoint directory (EMA weights when present).
        data_dir: LeRobot dataset (the training data).
        out: Checkpoint directory to write (atomically).
        max_frames: About how many frames to encode (at least one per episode and camera).
        batch_size: Frames per encoder call.
        device: Where to run the encoder.

    Returns:
        The checkpoint path.
    """
    vae = load_model(vae_run, "vae", GeSimVAE).to(device)
    dataset = LeRobotDataset(data_dir)
    per_episode = max(1, -(-max_frames // (dataset.num_episodes * len(dataset.video_keys))))
    parts = []
    for e in range(dataset.num_episodes):
        data = dataset.load_episode(e)
        length = dataset.episode_length(e)
        index = np.unique(np.linspace(0, length - 1, min(per_episode, length)).round().astype(int))
        parts += [data[key][index] for key in dataset.video_keys]
    frames = np.concatenate(parts)  # (N, H, W, 3) uint8, about max_frames
    latents = []
    for lo in range(0, len(frames), batch_size):
        x = from_uint8(torch.from_numpy(frames[lo : lo + batch_size]).to(device))
        x = rearrange(x, "n h w c -> n c 1 h w")
        latents.append(vae.encode(x).latent_dist.mode().float().cpu())  # raw latents (N, z, 1, h, w)
    z = rearrange(torch.cat(latents), "n c 1 h w -> c (n h w)")
    mean, std = z.mean(dim=1), z.std(dim=1).clamp(min=1e-6)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    meta = {
        "component": "gesim-vae",
        "calibrated_from": str(resolve_checkpoint(vae_run)),
        "latent_frames": len(frames),
    }
    return save_checkpoint(out, {"vae": vae.cpu()}, meta)


def load_world_model(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> GeSimWorldModel:
    """A GE-Sim world model from a bundle directory, or from a ``gesim`` run / checkpoint directory.

    Raises:
        CheckpointError: If ``path`` is neither, or a file is missing or corrupt.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"no GE-Sim bundle or run at {root}")
    if (root / WORLD_MODEL_FILE).is_file():
        return GeSimWorldModel.from_pretrained(root, device=device)
    return GeSimWorldModel.from_training_runs(root, device=device)


def assemble_gesim_bundle(
    vae_run: str | os.PathLike[str] | None,
    dit_run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    steps: int = 10,
    schedule: Schedule = "linear",
    cameras: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> Path:
    """Writes a bundle from a ``gesim-vae`` run and a ``gesim`` run (latest checkpoints, EMA weights preferred).

    Args:
        vae_run: VAE run or checkpoint; ``None`` takes the one the DiT run was trained with.
        dit_run: ``gesim`` run or checkpoint.
        out: Bundle directory (replaced atomically if it exists).
        steps: Default sampler steps stored in the bundle.
        schedule: Default sampler schedule stored in the bundle.
        cameras: Camera names in view order (default: from the run / its dataset).
        tasks: Task texts by id (default: from the run's dataset).

    Returns:
        The bundle path.
    """
    world = GeSimWorldModel.from_training_runs(
        dit_run, vae_run, steps=steps, schedule=schedule, cameras=cameras, tasks=tasks
    )
    return world.save_pretrained(out)
