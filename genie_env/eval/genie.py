"""Held-out evaluation of a Genie bundle: tokenizer fidelity, latent-action use, rollouts and controllability.

Windows. From each of the first ``episodes`` episodes of a dataset, ``windows_per_episode`` windows of
``P + horizon`` consecutive frames start at evenly spaced frames (first at frame 0, last ending at the episode's last
frame). Frame ``P - 1`` is the last prompt frame; real frame ``P - 1 + h`` is the target of horizon ``h``.

Metrics (images compared in uint8 ``[0, 255]``; PSNR per frame, capped at
:data:`~genie_env.eval.metrics.PSNR_CAP_DB`, then averaged):

* ``tokenizer_psnr`` / ``tokenizer_ssim`` -- encode + decode of every window frame, in clips of the tokenizer's
  ``context_frames`` (the length it was trained on; a shorter last clip takes the rest).
* ``codebook_usage`` -- fraction of the codebook used by those encodings.
* ``action_usage`` / ``action_histogram`` -- fraction of latent actions (and counts) inferred by the LAM over the
  windows' transitions. A collapsed LAM shows one dominant action (pitfall 2 of the Genie re-implementations).
* ``lam_action_gain_psnr`` -- what the latent actions tell the LAM's own decoder: its next-frame PSNR over the
  windows' transitions with the actions it infers, minus with uniformly random actions. Near 0 dB, the codes carry
  little about how a frame changes, and no dynamics model can make ``delta_psnr_t4`` large with them.
* ``action_nmi`` -- normalised mutual information between the latent action of transition ``t`` and the recorded
  ``action[t]`` (``None`` unless the dataset's action is a single integer, as for Atari).
* ``rollout_psnr`` / ``rollout_ssim`` at horizons 1, 4, 8, 16 (those ``<= horizon``) -- autoregressive generation
  from the ``P`` real prompt frames, driven by the LAM actions inferred from the real window.
* ``copy_last_psnr`` -- the last prompt frame held still: the floor a useful model must beat.
* ``random_action_psnr`` -- the same rollouts driven by uniformly random latent actions, with the same sampling
  noise; ``delta_psnr_t4 = rollout_psnr["4"] - random_action_psnr["4"]`` is the paper's controllability metric
  (Genie reports 1.9-2.1 dB; ``None`` when ``horizon < 4``).

All windows run batched (``batch_size`` windows per model call) and every random draw comes from a seeded
``torch.Generator``, so a result is reproducible for a given seed, device and batch size.
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
from genie_env.eval.metrics import from_uint8, mean_or_none, normalized_mutual_info, psnr, ssim, to_uint8
from genie_env.models.genie.world import GenieWorldModel
from genie_env.viz import save_png, tile_views, upscale

HORIZONS = (1, 4, 8, 16)
"""Rollout horizons reported (those up to the evaluation's ``horizon``)."""


def _select_camera(dataset: LeRobotDataset, camera: str | None) -> str:
    """The video key to read: the named camera, else the dataset's only (or first) one."""
    if not dataset.camera_names:
        raise ValueError(f"dataset {dataset.root} has no camera images")
    if camera is None:
        camera = dataset.camera_names[0]
    if camera not in dataset.camera_names:
        raise ValueError(f"camera {camera!r} not in dataset {dataset.root}; expected one of {dataset.camera_names}")
    return f"observation.images.{camera}"


def _discrete_actions(dataset: LeRobotDataset) -> bool:
    """True when the recorded ``action`` is one integer per frame (Atari), the case NMI is defined for."""
    feature = dataset.features.get("action")
    return feature is not None and feature.dtype == "int64" and feature.size == 1


def _load_windows(
    dataset: LeRobotDataset, video_key: str, episodes: int, length: int, per_episode: int
) -> tuple[Tensor, Tensor | None, list[tuple[int, int]]]:
    """Cuts the evaluation windows out of the first ``episodes`` episodes.

    Returns:
        ``(frames, actions, starts)``: ``frames`` ``(W, length, 3, H, W)`` uint8; ``actions`` ``(W, length - 1)``
        int64 recorded actions of the windows' transitions (``None`` unless discrete); ``starts`` the
        ``(episode, first frame)`` of each window.
    """
    discrete = _discrete_actions(dataset)
    frames, actions, starts = [], [], []
    for episode in range(episodes):
        starts_here = window_starts(dataset, episode, length, per_episode)
        data = dataset.load_episode(episode)
        for s in starts_here:
            frames.append(data[video_key][s : s + length])
            if discrete:
                # Row t's action leads from frame t to t + 1: the window's transitions are rows s .. s + length - 2.
                actions.append(data["action"][s : s + length - 1, 0])
            starts.append((episode, int(s)))
    frames_t = rearrange(torch.from_numpy(np.stack(frames)), "w t h x c -> w t c h x")
    actions_t = torch.from_numpy(np.stack(actions)).long() if discrete else None
    return frames_t, actions_t, starts


def _tokenizer_roundtrip(world: GenieWorldModel, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Encode + decode windows clip by clip.

    Args:
        world: the world model.
        real: ``(B, L, 3, H, W)`` float in ``[-1, 1]``.

    Returns:
        ``(psnr, ssim, ids)``: per-frame scores ``(B * L,)`` each (uint8 space) and all token ids, flattened.
    """
    clip = int(world.tokenizer.config.context_frames)
    length = real.shape[1]
    full = (length // clip) * clip
    pieces = []
    if full:
        pieces.append(rearrange(real[:, :full], "b (n c) ... -> (b n) c ...", c=clip))
    if full < length:
        pieces.append(real[:, full:])  # the remainder, as one shorter clip per window
    scores_p, scores_s, ids_all = [], [], []
    for frames in pieces:
        ids = world.encode(frames)
        recon, target = to_uint8(world.decode(ids)), to_uint8(frames)
        scores_p.append(psnr(recon, target).flatten())
        scores_s.append(ssim(recon, target).flatten())
        ids_all.append(ids.flatten())
    return torch.cat(scores_p), torch.cat(scores_s), torch.cat(ids_all)


@torch.no_grad()
def _lam_decoder_psnr(world: GenieWorldModel, real: Tensor, actions: Tensor, real_u8: Tensor) -> Tensor:
    """PSNR ``(B, L - 1)`` of the LAM decoder's next frames ``1 ..`` from the frames before and ``actions``."""
    predicted = world.lam.decode(real[:, :-1], actions).clamp(-1.0, 1.0)
    return psnr(to_uint8(predicted), real_u8[:, 1:]).cpu()


def _png_grid(real: np.ndarray, lam: np.ndarray, rand: np.ndarray) -> np.ndarray:
    """Grid image from ``(K, horizon, H, W, 3)`` uint8 real / LAM-driven / random-action frames.

    Per window three rows (real, LAM actions, random actions), one column per horizon ``1 .. horizon``; a wider
    white gap separates windows.
    """
    return window_grid(
        [[tile_views(list(upscale(r[k], PNG_SCALE))) for r in (real, lam, rand)] for k in range(len(real))]
    )


@torch.no_grad()
def evaluate_genie(
    bundle_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    episodes: int,
    *,
    prompt_frames: int = 4,
    horizon: int = 16,
    windows_per_episode: int = 4,
    steps: int | None = None,
    temperature: float | None = None,
    seed: int = 0,
    png: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    camera: str | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Evaluates a Genie bundle on held-out episodes (see the module docstring for the metrics).

    Args:
        bundle_dir: Genie bundle directory (``world_model.json`` with ``"type": "genie"``).
        data_dir: LeRobot dataset; its first ``episodes`` episodes are used.
        episodes: Number of episodes, ``>= 1``.
        prompt_frames: Real frames ``P`` given to every rollout.
        horizon: Frames generated per rollout.
        windows_per_episode: Evenly spaced windows per episode.
        steps: MaskGIT steps per frame (default: the bundle's).
        temperature: Sampling temperature (default: the bundle's).
        seed: Seed of the sampling noise and the random actions.
        png: Where to write the real / generated / random-action grid (optional).
        device: Where to run the models.
        progress: Show a progress bar over generated frames.
        camera: Camera of a multi-camera dataset (default: the first).
        batch_size: Windows per model call.

    Returns:
        JSON-serialisable dict: the metrics above plus the settings (``bundle``, ``dataset``, ``camera``,
        ``episodes``, ``windows``, ``windows_per_episode``, ``window_starts``, ``prompt_frames``, ``horizon``,
        ``steps``, ``temperature``, ``seed``, ``device``, ``batch_size``), ``rollout_frames_per_s`` and ``seconds``.

    Raises:
        ValueError: On a bad setting, a dataset with fewer than ``episodes`` episodes or too-short episodes, or
            frames of a different size than the model's.
        CheckpointError: If the bundle is missing or corrupt.
    """
    start_time = time.perf_counter()
    episodes = check_positive("episodes", episodes)
    prompt_frames = check_positive("prompt_frames", prompt_frames)
    horizon = check_positive("horizon", horizon)
    windows_per_episode = check_positive("windows_per_episode", windows_per_episode)
    batch_size = check_positive("batch_size", batch_size)
    device = torch.device(device)

    world = GenieWorldModel.from_pretrained(bundle_dir, device=device)
    steps = world.maskgit_steps if steps is None else check_positive("steps", steps)
    temperature = world.temperature if temperature is None else float(temperature)
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature!r}")

    dataset = LeRobotDataset(data_dir)
    if dataset.num_episodes < episodes:
        raise ValueError(f"dataset {dataset.root} has {dataset.num_episodes} episodes, {episodes} requested")
    video_key = _select_camera(dataset, camera)
    length = prompt_frames + horizon
    frames, recorded, starts = _load_windows(dataset, video_key, episodes, length, windows_per_episode)
    if tuple(frames.shape[2:]) != world.frame_shape:
        raise ValueError(
            f"dataset frames are {tuple(frames.shape[2:])} (C, H, W), the model expects {world.frame_shape}"
        )
    num_windows = frames.shape[0]
    num_actions, p = world.num_actions, prompt_frames

    # Random actions are drawn on the CPU up front, so they do not depend on the device or the batch size. Both
    # rollouts use generators with the same seed: the two then differ only by their actions (common random numbers),
    # which keeps the noise out of delta_psnr_t4.
    random_actions = torch.randint(
        0, num_actions, (num_windows, horizon), generator=torch.Generator().manual_seed(seed + 1)
    )
    lam_random_actions = torch.randint(
        0, num_actions, (num_windows, length - 1), generator=torch.Generator().manual_seed(seed + 2)
    )
    gen_lam = torch.Generator(device).manual_seed(seed)
    gen_random = torch.Generator(device).manual_seed(seed)

    png_index = png_windows(num_windows)
    png_rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    tok_psnr, tok_ssim, lam_actions = [], [], []
    roll_psnr, roll_ssim, rand_psnr, copy_psnr, lam_gain = [], [], [], [], []
    code_counts = torch.zeros(world.codebook_size, dtype=torch.long)
    rollout_seconds = 0.0

    bar = tqdm(total=2 * num_windows * horizon, desc="genie eval", unit="frame", disable=not progress)
    for lo in range(0, num_windows, batch_size):
        hi = min(lo + batch_size, num_windows)
        real_u8 = frames[lo:hi].to(device)  # (B, L, 3, H, W)
        real = from_uint8(real_u8)
        b = hi - lo

        scores_p, scores_s, ids = _tokenizer_roundtrip(world, real)
        tok_psnr.append(scores_p.cpu())
        tok_ssim.append(scores_s.cpu())
        code_counts += torch.bincount(ids.cpu(), minlength=world.codebook_size)

        actions = world.infer_actions(real)  # (B, L - 1); entry t explains frame t -> t + 1
        lam_actions.append(actions.cpu())
        lam_gain.append(
            _lam_decoder_psnr(world, real, actions, real_u8)
            - _lam_decoder_psnr(world, real, lam_random_actions[lo:hi].to(device), real_u8)
        )
        prompt, prompt_actions = real[:, :p], actions[:, : p - 1]
        target = real_u8[:, p:]  # (B, horizon, ...): real frames P .. P + horizon - 1

        def advance(_: int, b: int = b) -> None:
            bar.update(b)

        t0 = time.perf_counter()
        gen = world.rollout(
            prompt,
            actions[:, p - 1 :],
            prompt_actions=prompt_actions,
            steps=steps,
            temperature=temperature,
            generator=gen_lam,
            on_frame=advance,
        )
        gen_random_frames = world.rollout(
            prompt,
            random_actions[lo:hi].to(device),
            prompt_actions=prompt_actions,
            steps=steps,
            temperature=temperature,
            generator=gen_random,
            on_frame=advance,
        )
        rollout_seconds += time.perf_counter() - t0
        gen_u8, rand_u8 = to_uint8(gen), to_uint8(gen_random_frames)
        roll_psnr.append(psnr(gen_u8, target).cpu())  # (B, horizon)
        roll_ssim.append(ssim(gen_u8, target).cpu())
        rand_psnr.append(psnr(rand_u8, target).cpu())
        copy_psnr.append(psnr(real_u8[:, p - 1 : p].expand_as(target), target).cpu())

        for i in png_index[(png_index >= lo) & (png_index < hi)]:
            k = int(i) - lo
            png_rows[int(i)] = tuple(
                rearrange(x[k], "t c h w -> t h w c").cpu().numpy() for x in (target, gen_u8, rand_u8)
            )
    bar.close()

    roll_psnr_t, roll_ssim_t = torch.cat(roll_psnr), torch.cat(roll_ssim)
    rand_psnr_t, copy_psnr_t = torch.cat(rand_psnr), torch.cat(copy_psnr)
    horizons = [h for h in HORIZONS if h <= horizon]

    def at_horizons(scores: Tensor) -> dict[str, float | None]:
        return {str(h): mean_or_none(scores[:, h - 1]) for h in horizons}

    lam_all = torch.cat(lam_actions)  # (W, L - 1)
    action_counts = torch.bincount(lam_all.flatten(), minlength=num_actions)
    action_nmi = None
    if recorded is not None:
        action_nmi = normalized_mutual_info(lam_all.flatten().numpy(), recorded.flatten().numpy())
    rollout_psnr, random_psnr = at_horizons(roll_psnr_t), at_horizons(rand_psnr_t)
    delta = None
    if rollout_psnr.get("4") is not None and random_psnr.get("4") is not None:
        delta = rollout_psnr["4"] - random_psnr["4"]

    if png is not None:
        grid = [np.stack([png_rows[int(i)][r] for i in png_index]) for r in range(3)]
        save_png(png, _png_grid(*grid))

    return {
        "type": "genie",
        "tokenizer_psnr": mean_or_none(torch.cat(tok_psnr)),
        "tokenizer_ssim": mean_or_none(torch.cat(tok_ssim)),
        "codebook_usage": float((code_counts > 0).sum()) / world.codebook_size,
        "action_usage": float((action_counts > 0).sum()) / num_actions,
        "action_histogram": action_counts.tolist(),
        "action_nmi": action_nmi,
        "lam_action_gain_psnr": mean_or_none(torch.cat(lam_gain)),
        "rollout_psnr": rollout_psnr,
        "rollout_ssim": at_horizons(roll_ssim_t),
        "copy_last_psnr": at_horizons(copy_psnr_t),
        "random_action_psnr": random_psnr,
        "delta_psnr_t4": delta,
        "rollout_frames_per_s": 2 * num_windows * horizon / rollout_seconds if rollout_seconds > 0 else None,
        "bundle": str(Path(bundle_dir).resolve()),
        "dataset": str(Path(data_dir).resolve()),
        "camera": video_key.removeprefix("observation.images."),
        "episodes": episodes,
        "windows": num_windows,
        "windows_per_episode": windows_per_episode,
        "window_starts": [list(s) for s in starts],
        "prompt_frames": prompt_frames,
        "horizon": horizon,
        "steps": steps,
        "temperature": temperature,
        "seed": seed,
        "device": str(device),
        "batch_size": batch_size,
        "png": None if png is None else str(png),
        "genie_env_version": __version__,
        "seconds": time.perf_counter() - start_time,
    }
