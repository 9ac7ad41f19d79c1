"""Held-out evaluation of a GE-Sim bundle: one-step fidelity, open-loop rollouts and pose controllability.

Windows. From each of the first ``episodes`` episodes, ``windows_per_episode`` windows of ``P + horizon``
consecutive frames start at evenly spaced frames (first at frame 0, last ending at the episode's last frame), as in
:mod:`genie_env.eval.genie`. The window's first ``P`` frames are real (the prompt); real frame ``P - 1 + h`` is the
target of horizon ``h``. Every view of the bundle's cameras is scored.

Metrics (frames compared in uint8 ``[0, 255]``; PSNR per frame and view, capped at
:data:`~genie_env.eval.metrics.PSNR_CAP_DB`, then averaged):

* ``next_frame_psnr`` / ``next_frame_ssim`` -- per view and ``"mean"``: teacher-forced prediction of every target
  chunk from *real* memory (memory chosen over the real window frames before the chunk, as the rollout would).
* ``rollout_psnr`` / ``rollout_ssim`` at horizons 1, 4, 16 (those ``<= horizon``, plus ``horizon``) -- open loop:
  the model's own frames become its memory, driven by the recorded tip poses and cameras.
* ``copy_last_psnr`` -- the last prompt frame held still, the floor a useful model must beat.
* ``other_pose_psnr`` -- the same rollouts, with the same sampling noise, driven by the poses and cameras of the
  same window of another episode (the next one; the next window if there is one episode) after the prompt.
  ``action_delta_psnr = rollout_psnr[horizon] - other_pose_psnr[horizon]``: how much the model follows the
  actions (``None`` with a single window).

All windows run batched (``batch_size`` windows per model call) with seeded generators, so a result is
reproducible for a given seed, device and batch size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from genie_env import __version__
from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.common import PNG_SCALE, check_positive, png_windows, window_grid, window_starts
from genie_env.eval.metrics import from_uint8, mean_or_none, psnr, ssim, to_uint8
from genie_env.models.gesim.world import GeSimWorldModel, episode_inputs
from genie_env.viz import save_png, tile_views, upscale

HORIZONS = (1, 4, 16)
"""Rollout horizons reported (those up to the evaluation's ``horizon``, which is always reported too)."""


def _load_windows(
    dataset: LeRobotDataset, cameras: list[str], episodes: int, length: int, per_episode: int
) -> tuple[dict[str, Tensor], list[tuple[int, int]]]:
    """Cuts the evaluation windows out of the first ``episodes`` episodes.

    Returns:
        ``(windows, starts)``: ``frames`` ``(W, V, L, 3, H, W)`` uint8, ``states`` ``(W, L, 8)``, ``extrinsics``
        ``(W, V, L, 4, 4)``, ``intrinsics`` ``(W, V, 3, 3)``, and the ``(episode, first frame)`` of each window.
    """
    parts: dict[str, list[Tensor]] = {"frames": [], "states": [], "extrinsics": [], "intrinsics": []}
    starts = []
    for episode in range(episodes):
        starts_here = np.unique(window_starts(dataset, episode, length, per_episode))
        data = episode_inputs(dataset, episode, cameras)
        for s in starts_here:
            parts["frames"].append(data["frames"][:, s : s + length])
            parts["states"].append(data["states"][s : s + length])
            parts["extrinsics"].append(data["extrinsics"][:, s : s + length])
            parts["intrinsics"].append(data["intrinsics"])
            starts.append((episode, int(s)))
    return {k: torch.stack(v) for k, v in parts.items()}, starts


def _other_windows(starts: list[tuple[int, int]]) -> np.ndarray | None:
    """For each window, a window of another episode (same position in the episode's list), else the next window."""
    n = len(starts)
    if n < 2:
        return None
    episodes = sorted({e for e, _ in starts})
    if len(episodes) < 2:
        return np.roll(np.arange(n), -1)
    by_episode = {e: [i for i, (ep, _) in enumerate(starts) if ep == e] for e in episodes}
    other = np.zeros(n, dtype=np.int64)
    for k, e in enumerate(episodes):
        mine, theirs = by_episode[e], by_episode[episodes[(k + 1) % len(episodes)]]
        for j, i in enumerate(mine):
            other[i] = theirs[min(j, len(theirs) - 1)]
    return other


def _teacher_forced(
    world: GeSimWorldModel,
    real: Tensor,
    states: Tensor,
    extrinsics: Tensor,
    intrinsics: Tensor,
    prompt: int,
    steps: int,
    generator: torch.Generator,
) -> Tensor:
    """Every chunk after the prompt predicted from real memory; ``(B, V, L - P, 3, H, W)`` in [-1, 1]."""
    length = real.shape[2]
    latents = world.encode(real)
    out = []
    for start in range(prompt, length, world.chunk):
        memory = world.memory_indices(start)
        new = world.predict_chunk(
            latents, states, extrinsics, intrinsics, memory, start, world.chunk, steps=steps, generator=generator
        )
        out.append(new[:, :, : min(world.chunk, length - start)])
    return torch.cat(out, dim=2)


def _png_grid(real: np.ndarray, gen: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Grid image from ``(K, V, horizon, H, W, 3)`` uint8 real / rollout / other-pose frames.

    Per window three rows (real, rollout, other poses); one column per horizon ``1 .. horizon``; in every cell the
    views are stacked top to bottom. A wider white gap separates windows.
    """

    def row(frames: np.ndarray) -> np.ndarray:
        return tile_views(list(upscale(rearrange(frames, "v t h w c -> t (v h) w c"), PNG_SCALE)))

    return window_grid([[row(r[k]) for r in (real, gen, other)] for k in range(len(real))])


@torch.no_grad()
def evaluate_gesim(
    bundle_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    episodes: int,
    *,
    prompt_frames: int | None = None,
    horizon: int = 16,
    windows_per_episode: int = 4,
    steps: int | None = None,
    seed: int = 0,
    png: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    batch_size: int = 16,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Evaluates a GE-Sim bundle on held-out episodes (see the module docstring for the metrics).

    Args:
        bundle_dir: GE-Sim bundle directory (``world_model.json`` with ``"type": "gesim"``).
        data_dir: Fetch-style LeRobot dataset with the bundle's cameras; its first ``episodes`` episodes are used.
        episodes: Number of episodes, ``>= 1``.
        prompt_frames: Real frames ``P`` given to every rollout (default: the bundle's ``n_memory``).
        horizon: Frames generated per rollout.
        windows_per_episode: Evenly spaced windows per episode.
        steps: Sampler steps per chunk (default: the bundle's).
        seed: Seed of the sampling noise.
        png: Where to write the real / rollout / other-pose grid (optional).
        device: Where to run the models.
        progress: Show a progress bar over generated frames.
        batch_size: Windows per model call.
        temperature: Not used by GE-Sim's flow sampler; accepted for the common ``genie-env eval`` options and
            must stay ``None``.

    Returns:
        JSON-serialisable dict: the metrics above plus the settings (``bundle``, ``dataset``, ``cameras``,
        ``episodes``, ``windows``, ``windows_per_episode``, ``window_starts``, ``prompt_frames``, ``horizon``,
        ``steps``, ``schedule``, ``seed``, ``device``, ``batch_size``), ``rollout_frames_per_s`` and ``seconds``.

    Raises:
        ValueError: On a bad setting, a dataset with fewer than ``episodes`` episodes, too-short episodes, or
            without the bundle's cameras and geometry.
        CheckpointError: If the bundle is missing or corrupt.
    """
    start_time = time.perf_counter()
    if temperature is not None:
        raise ValueError(f"GE-Sim's flow sampler has no temperature; leave it unset (got {temperature!r})")
    episodes = check_positive("episodes", episodes)
    horizon = check_positive("horizon", horizon)
    windows_per_episode = check_positive("windows_per_episode", windows_per_episode)
    batch_size = check_positive("batch_size", batch_size)
    device = torch.device(device)

    world = GeSimWorldModel.from_pretrained(bundle_dir, device=device)
    prompt = world.n_memory if prompt_frames is None else check_positive("prompt_frames", prompt_frames)
    steps = world.steps if steps is None else check_positive("steps", steps)
    dataset = LeRobotDataset(data_dir)
    if dataset.num_episodes < episodes:
        raise ValueError(f"dataset {dataset.root} has {dataset.num_episodes} episodes, {episodes} requested")
    windows, starts = _load_windows(dataset, world.cameras, episodes, prompt + horizon, windows_per_episode)
    num_windows = len(starts)
    other = _other_windows(starts)

    # Rollouts with true and with other poses use generators with the same seed (common random numbers), so they
    # differ only by their poses, which keeps the sampling noise out of action_delta_psnr.
    gens = {name: torch.Generator(device).manual_seed(seed) for name in ("next", "true", "other")}
    png_index = png_windows(num_windows)
    png_rows: dict[int, tuple[np.ndarray, ...]] = {}
    scores: dict[str, list[Tensor]] = {k: [] for k in ("next_p", "next_s", "roll_p", "roll_s", "copy_p", "other_p")}
    rollout_seconds = 0.0
    passes = 3 if other is not None else 2
    bar = tqdm(total=passes * num_windows * horizon, desc="gesim eval", unit="frame", disable=not progress)
    for lo in range(0, num_windows, batch_size):
        hi = min(lo + batch_size, num_windows)
        b = hi - lo
        real_u8 = windows["frames"][lo:hi]  # (B, V, L, 3, H, W)
        real = from_uint8(real_u8)
        states, extr, intr = windows["states"][lo:hi], windows["extrinsics"][lo:hi], windows["intrinsics"][lo:hi]
        target = real_u8[:, :, prompt:]  # (B, V, horizon, 3, H, W)

        def advance(n: int, b: int = b) -> None:
            bar.update(n * b)

        # 1. One-step predictions from real memory.
        next_u8 = to_uint8(_teacher_forced(world, real, states, extr, intr, prompt, steps, gens["next"]).cpu())
        bar.update(b * horizon)
        scores["next_p"].append(psnr(next_u8, target))  # (B, V, horizon)
        scores["next_s"].append(ssim(next_u8, target))

        # 2. Open-loop rollouts on the recorded poses, and on another window's poses after the prompt.
        t0 = time.perf_counter()
        run = {"steps": steps, "on_chunk": advance}
        gen = world.rollout(real[:, :, :prompt], states, extr, intr, generator=gens["true"], **run).frames
        rollout_seconds += time.perf_counter() - t0
        gen_u8 = to_uint8(gen[:, :, prompt:])
        scores["roll_p"].append(psnr(gen_u8, target))
        scores["roll_s"].append(ssim(gen_u8, target))
        scores["copy_p"].append(psnr(real_u8[:, :, prompt - 1 : prompt].expand_as(target), target))
        other_u8 = torch.zeros_like(gen_u8)
        if other is not None:
            idx = torch.from_numpy(other[lo:hi])
            o_states = torch.cat([states[:, :prompt], windows["states"][idx, prompt:]], dim=1)
            o_extr = torch.cat([extr[:, :, :prompt], windows["extrinsics"][idx][:, :, prompt:]], dim=2)
            t0 = time.perf_counter()
            o_gen = world.rollout(real[:, :, :prompt], o_states, o_extr, intr, generator=gens["other"], **run).frames
            rollout_seconds += time.perf_counter() - t0
            other_u8 = to_uint8(o_gen[:, :, prompt:])
            scores["other_p"].append(psnr(other_u8, target))

        for i in png_index[(png_index >= lo) & (png_index < hi)]:
            k = int(i) - lo
            png_rows[int(i)] = tuple(
                rearrange(x[k], "v t c h w -> v t h w c").numpy() for x in (target, gen_u8, other_u8)
            )
    bar.close()

    cat = {k: torch.cat(v) if v else None for k, v in scores.items()}  # (W, V, horizon) each
    horizons = sorted({h for h in HORIZONS if h <= horizon} | {horizon})

    def at_horizons(x: Tensor | None) -> dict[str, float | None]:
        return {str(h): None if x is None else mean_or_none(x[:, :, h - 1]) for h in horizons}

    def per_view(x: Tensor) -> dict[str, float | None]:
        return {**{cam: mean_or_none(x[:, v]) for v, cam in enumerate(world.cameras)}, "mean": mean_or_none(x)}

    rollout_psnr, other_psnr = at_horizons(cat["roll_p"]), at_horizons(cat["other_p"])
    true_h, other_h = rollout_psnr[str(horizon)], other_psnr[str(horizon)]
    delta = None if true_h is None or other_h is None else true_h - other_h

    if png is not None:
        grid = [np.stack([png_rows[int(i)][r] for i in png_index]) for r in range(3)]
        save_png(png, _png_grid(*grid))

    return {
        "type": "gesim",
        "next_frame_psnr": per_view(cat["next_p"]),
        "next_frame_ssim": per_view(cat["next_s"]),
        "rollout_psnr": rollout_psnr,
        "rollout_ssim": at_horizons(cat["roll_s"]),
        "copy_last_psnr": at_horizons(cat["copy_p"]),
        "other_pose_psnr": other_psnr,
        "action_delta_psnr": delta,
        "rollout_frames_per_s": (passes - 1) * num_windows * horizon / rollout_seconds if rollout_seconds else None,
        "bundle": str(Path(bundle_dir).resolve()),
        "dataset": str(Path(data_dir).resolve()),
        "cameras": world.cameras,
        "episodes": episodes,
        "windows": num_windows,
        "windows_per_episode": windows_per_episode,
        "window_starts": [list(s) for s in starts],
        "prompt_frames": prompt,
        "horizon": horizon,
        "steps": steps,
        "schedule": world.schedule,
        "chunk": world.chunk,
        "seed": seed,
        "device": str(device),
        "batch_size": batch_size,
        "png": None if png is None else str(png),
        "genie_env_version": __version__,
        "seconds": time.perf_counter() - start_time,
    }
