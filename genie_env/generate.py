"""``genie-env generate``: a GE-Sim world model re-imagines a recorded episode, written as a preview video.

The model gets the episode's first ``P`` frames (``P`` = its memory size by default) and the recorded tip poses and
cameras of every frame, and generates the rest of the episode chunk by chunk
(:meth:`~genie_env.models.gesim.world.GeSimWorldModel.rollout`). Every video frame shows three rows, the views side
by side in each: the generated frames (the given ones during the first ``P`` frames), the real frames, and the
trajectory maps the model was conditioned on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.metrics import from_uint8, psnr, to_uint8
from genie_env.models.gesim.conditioning import conditioning_maps, maps_to_uint8
from genie_env.models.gesim.world import episode_inputs, load_world_model
from genie_env.viz import save_preview_video, stack_rows, tile_views

ROW_GAP = 2
"""White pixels between the generated, real and trajectory rows (before upscaling)."""


@dataclass
class GenerateResult:
    """What :func:`generate_episode` wrote and measured.

    Attributes:
        path: The mp4 file.
        frames: Frames in the video.
        given: Leading real frames given to the model.
        chunks: Model calls (generated chunks).
        steps: Sampler steps per chunk.
        psnr: Mean PSNR (dB, uint8 frames, all views) of the generated frames against the real ones.
        seconds: Wall-clock time of the rollout.
    """

    path: Path
    frames: int
    given: int
    chunks: int
    steps: int
    psnr: float
    seconds: float


def parse_episode(spec: str) -> tuple[str, int]:
    """``"DATASET:INDEX"`` -> ``(dataset directory, episode index)``.

    Raises:
        ValueError: If ``spec`` has no ``:INDEX`` suffix or the index is not a non-negative integer.
    """
    path, sep, index = spec.rpartition(":")
    if not sep or not path or not index.isdigit():
        raise ValueError(f"--episode must look like DATASET:INDEX (e.g. data/fetch_push:0), got {spec!r}")
    return path, int(index)


def video_frames(generated: np.ndarray, real: np.ndarray, traj: np.ndarray) -> np.ndarray:
    """Stacks the three rows of the preview video.

    Args:
        generated: ``(V, T, H, W, 3)`` uint8.
        real: ``(V, T, H, W, 3)`` uint8.
        traj: ``(V, T, H, W, 3)`` uint8 trajectory maps.

    Returns:
        ``(T, 3H + 2 * ROW_GAP, V W + (V - 1) * 2, 3)`` uint8.
    """
    rows = [tile_views(list(x)) for x in (generated, real, traj)]  # each (T, H, V W + gaps, 3)
    return stack_rows(rows, gap=ROW_GAP)


@torch.no_grad()
def generate_episode(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    episode: int,
    out: str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int = 0,
    max_frames: int | None = None,
    prompt_frames: int | None = None,
    device: torch.device | str = "cpu",
    scale: int = 4,
    progress: bool = True,
) -> GenerateResult:
    """Generates a recorded episode with a GE-Sim world model and writes the preview mp4.

    Args:
        checkpoint: GE-Sim bundle directory, or a ``gesim`` run / checkpoint directory.
        data_dir: LeRobot dataset with the model's cameras, tip states and camera geometry.
        episode: Episode index.
        out: The mp4 to write.
        steps: Sampler steps per chunk (default: the bundle's).
        seed: Seed of the sampling noise.
        max_frames: Use only the episode's first ``max_frames`` frames.
        prompt_frames: Real frames given to the model (default: its ``n_memory``, at most ``T - 1``).
        device: Where to run the model.
        scale: Nearest-neighbour upscaling of the video.
        progress: Show a progress bar over chunks.

    Returns:
        What was written and measured.

    Raises:
        ValueError: On a bad setting, or a dataset without the model's cameras and geometry.
        CheckpointError: If the model cannot be loaded.
    """
    world = load_world_model(checkpoint, device=device)
    dataset = LeRobotDataset(data_dir)
    if not 0 <= episode < dataset.num_episodes:
        raise ValueError(f"episode {episode} out of range: {dataset.root} has {dataset.num_episodes} episodes")
    inputs = episode_inputs(dataset, episode, world.cameras)
    total = inputs["states"].shape[0]
    if max_frames is not None:
        if max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 (one given frame, one generated), got {max_frames}")
        total = min(total, max_frames)
    if total < 2:
        raise ValueError(f"episode {episode} has {total} frame(s); generation needs at least 2")
    given = min(world.n_memory, total - 1) if prompt_frames is None else prompt_frames
    if not 1 <= given < total:
        raise ValueError(f"prompt_frames must be in [1, {total - 1}] for {total} frames, got {given}")
    steps = world.steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    real_u8 = inputs["frames"][:, :total]  # (V, T, 3, H, W)
    states, extrinsics = inputs["states"][:total], inputs["extrinsics"][:, :total]
    real = from_uint8(real_u8)
    generator = torch.Generator(device=world.device).manual_seed(seed)
    start = time.perf_counter()
    result = world.rollout(
        real[None, :, :given],
        states[None],
        extrinsics[None],
        inputs["intrinsics"][None],
        steps=steps,
        generator=generator,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    generated_u8 = to_uint8(result.frames[0])  # (V, T, 3, H, W)
    score = float(psnr(generated_u8[:, given:], real_u8[:, given:]).mean())

    height, width = real_u8.shape[-2:]
    traj, _ = conditioning_maps(
        states, extrinsics, inputs["intrinsics"], height, width, world.max_opening, world.disc_radius_m
    )
    layout = "v t c h w -> v t h w c"
    frames = video_frames(
        rearrange(generated_u8, layout).numpy(), rearrange(real_u8, layout).numpy(), maps_to_uint8(traj).numpy()
    )
    fps = world.fps or dataset.fps
    path = save_preview_video(out, frames, fps, scale=scale)
    return GenerateResult(
        path=path,
        frames=total,
        given=given,
        chunks=len(result.chunk_starts),
        steps=steps,
        psnr=score,
        seconds=seconds,
    )


def main_generate(
    checkpoint: str,
    episode_spec: str,
    out: str,
    *,
    steps: int | None,
    seed: int,
    max_frames: int | None,
    prompt_frames: int | None,
    device: str,
    progress: bool,
) -> int:
    """CLI body: generate, then print what was written."""
    data_dir, episode = parse_episode(episode_spec)
    r = generate_episode(
        checkpoint,
        data_dir,
        episode,
        out,
        steps=steps,
        seed=seed,
        max_frames=max_frames,
        prompt_frames=prompt_frames,
        device=device,
        progress=progress,
    )
    print(
        f"generated {r.frames - r.given} of {r.frames} frames ({r.given} given, {r.chunks} chunks x {r.steps} steps) "
        f"in {r.seconds:.1f} s; PSNR vs real {r.psnr:.2f} dB -> {r.path}"
    )
    return 0
