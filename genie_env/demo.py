"""``genie-env demo``: record the real simulators our worlds are learned from and show what was recorded.

The demo records FetchPush (three cameras, scripted policy) and Atari Boxing into datasets, then writes, per
simulator, a preview mp4 and a PNG strip of the views side by side, and prints the recording speed. For Fetch a
second row shows the trajectory maps GE-Sim is conditioned on, drawn from the recorded tip pose and camera
geometry: the disc follows the gripper in every view when the geometry is right.

Then every shipped world model that fits the recording imagines it: from the first real frames, the model renders
the rest of the episode (Genie driven by the latent actions its LAM reads off the real frames; GE-Sim by the
recorded end-effector path), and the demo writes real-over-imagined mp4s and PNG strips and prints the PSNR of
the imagined frames next to the copy-last-frame baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie_env.assets import asset_path, available_assets
from genie_env.data.collect import collect
from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.metrics import psnr, to_uint8
from genie_env.models.genie.world import GenieWorldModel
from genie_env.models.gesim.conditioning import conditioning_maps, maps_to_uint8
from genie_env.models.gesim.world import GeSimWorldModel, episode_inputs
from genie_env.start_states import frames_to_float
from genie_env.viz import save_png, save_preview_video, stack_rows, strip, tile_views, upscale


@dataclass
class DemoResult:
    """Files the demo wrote and what it measured, per simulator."""

    videos: dict[str, Path]
    strips: dict[str, Path]
    steps_per_second: dict[str, float]
    imagined: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per world model: ``psnr`` and ``copy_last_psnr`` (dB) of its imagined frames, and ``frames_per_second``."""


def run_demo(out: str | Path = "genie-env-demo", *, size: int = 64, steps: int = 150, seed: int = 0) -> DemoResult:
    """Record FetchPush-v4 and ALE/Boxing-v5 and write previews under ``out``.

    Args:
        out: output directory (datasets under ``out/datasets``; it is replaced if it exists and was made by
            a previous demo).
        size: image size in pixels.
        steps: steps of Boxing to record (Fetch episodes have 50 steps; two are recorded).
        seed: collection seed.
    """
    out = Path(out)
    runs = {
        "FetchPush-v4": {"episodes": 2, "policy": "scripted", "max_steps": None},
        "ALE/Boxing-v5": {"episodes": 1, "policy": "scripted", "max_steps": steps},
    }
    result = DemoResult({}, {}, {})
    for env_id, kw in runs.items():
        name = env_id.split("/")[-1].split("-")[0].lower()
        root = out / "datasets" / name
        stats = collect(
            env_id,
            kw["episodes"],
            root,
            seed=seed,
            size=size,
            policy=kw["policy"],
            max_steps=kw["max_steps"],
            overwrite=True,
        )
        result.steps_per_second[env_id] = stats.steps_per_second
        ds = LeRobotDataset(root)
        episodes = [ds.load_episode(i) for i in range(ds.num_episodes)]
        keys = ds.video_keys
        views = [[ep[k] for k in keys] for ep in episodes]
        if ds.intrinsics(ds.camera_names[0]) is not None:  # cameras with geometry: add trajectory maps
            views = [v + list(_trajectory_rows(ep, ds)) for v, ep in zip(views, episodes, strict=True)]
        frames = np.concatenate([_grid(v, len(keys)) for v in views])
        result.videos[env_id] = save_preview_video(out / f"{name}.mp4", frames, ds.fps)
        rows = [strip(view, 8) for view in views[0]]
        result.strips[env_id] = save_png(out / f"{name}_strip.png", upscale(np.concatenate(rows, axis=0), 2))
        for world, imagine in IMAGINERS.get(env_id, {}).items():
            if world in available_assets():
                imagined = imagine(asset_path(world), ds, seed)
                if imagined is not None:
                    last, real, fake, fps = imagined
                    key = f"{world} ({env_id})"
                    result.imagined[key] = _scores(last, real, fake, fps)
                    both = stack_rows([tile_views(list(real)), tile_views(list(fake))])
                    result.videos[key] = save_preview_video(out / f"{world}.mp4", both, ds.fps)
                    rows = [strip(r, 8) for r in (*real, *fake)]
                    result.strips[key] = save_png(out / f"{world}_strip.png", upscale(np.concatenate(rows), 2))
    return result


Imagined = tuple[np.ndarray, np.ndarray, np.ndarray, float]


def _imagine_genie(bundle: Path, ds: LeRobotDataset, seed: int) -> Imagined | None:
    """Genie renders episode 0 after a 4-frame prompt, driven by the LAM's actions read off the real frames.

    Returns ``(last given, real, imagined, frames/s)``: uint8 ``(V, 1, H, W, 3)``, ``(V, T, H, W, 3)`` twice (one
    view), or ``None`` if the recording's frames are not the model's size or too short.
    """
    world = GenieWorldModel.from_pretrained(bundle)
    episode = torch.from_numpy(ds.load_episode(0)[ds.video_keys[0]])  # (T, H, W, 3)
    frames = frames_to_float(episode)[None]  # (1, T, 3, H, W)
    prompt = 4
    if tuple(frames.shape[2:]) != world.frame_shape or frames.shape[1] <= prompt:
        return None
    actions = world.infer_actions(frames)  # (1, T - 1): actions[:, t] explains frame t -> t + 1
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    fake = world.rollout(frames[:, :prompt], actions[:, prompt - 1 :], generator=generator)
    fps = fake.shape[1] / (time.perf_counter() - start)
    pixels = to_uint8(frames).permute(0, 1, 3, 4, 2).numpy()
    return pixels[:, prompt - 1 : prompt], pixels[:, prompt:], to_uint8(fake).permute(0, 1, 3, 4, 2).numpy(), fps


def _imagine_gesim(bundle: Path, ds: LeRobotDataset, seed: int) -> Imagined | None:
    """GE-Sim renders episode 0 of every camera from its first real frame, driven by the recorded tip poses.

    Returns ``(last given, real, imagined, frames/s)`` as :func:`_imagine_genie` (all views), or ``None`` if the
    recording lacks the model's cameras or its size is not a multiple of the VAE's.
    """
    world = GeSimWorldModel.from_pretrained(bundle)
    if any(c not in ds.camera_names for c in world.cameras):
        return None
    inputs = episode_inputs(ds, 0, world.cameras)
    frames = inputs["frames"][None].float() / 127.5 - 1.0  # (1, V, T, 3, H, W) in [-1, 1]
    if frames.shape[-1] % world.spatial_factor or frames.shape[-2] % world.spatial_factor:
        return None
    given = 1
    start = time.perf_counter()
    out = world.rollout(
        frames[:, :, :given],
        inputs["states"][None],
        inputs["extrinsics"][None],
        inputs["intrinsics"][None],
        generator=torch.Generator().manual_seed(seed),
    )
    fake = out.frames[0, :, given:]  # (V, T - 1, 3, H, W)
    fps = fake.shape[1] / (time.perf_counter() - start)
    pixels = rearrange(to_uint8(frames[0]), "v t c h w -> v t h w c").numpy()
    imagined = rearrange(to_uint8(fake), "v t c h w -> v t h w c").numpy()
    return pixels[:, given - 1 : given], pixels[:, given:], imagined, fps


def _scores(last: np.ndarray, real: np.ndarray, fake: np.ndarray, fps: float) -> dict[str, float]:
    """Mean per-frame PSNR of imagined vs real frames, and of repeating the last given frame (same frames)."""
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    copy_last = torch.from_numpy(last).expand_as(real_t)
    return {
        "psnr": float(psnr(fake_t, real_t).mean()),
        "copy_last_psnr": float(psnr(copy_last, real_t).mean()),
        "frames_per_second": fps,
    }


# Recorded simulator -> {shipped world model: how it imagines that recording}.
IMAGINERS = {
    "ALE/Boxing-v5": {"genie-boxing-tiny": _imagine_genie},
    "FetchPush-v4": {"gesim-fetchpush-tiny": _imagine_gesim},
}


def _trajectory_rows(episode: dict[str, np.ndarray], ds: LeRobotDataset) -> np.ndarray:
    """Per camera, the episode's trajectory maps as uint8 images (V, T, H, W, 3)."""
    cams = ds.camera_names
    extr = torch.from_numpy(np.stack([episode[f"observation.cameras.{c}.extrinsics"] for c in cams]))
    intr = torch.from_numpy(np.stack([ds.intrinsics(c) for c in cams]))
    height, width = episode[ds.video_keys[0]].shape[1:3]
    traj, _ = conditioning_maps(torch.from_numpy(episode["observation.state"]), extr, intr, height, width)
    return maps_to_uint8(traj).numpy()


def _grid(views: list[np.ndarray], per_row: int) -> np.ndarray:
    """Tile (T, H, W, 3) views into rows of ``per_row`` views, one row under the other."""
    return stack_rows([tile_views(views[i : i + per_row]) for i in range(0, len(views), per_row)])


def main_demo(out: str, size: int, steps: int, seed: int) -> int:
    """CLI body: run the demo and print what it wrote and measured."""
    result = run_demo(out, size=size, steps=steps, seed=seed)
    print(f"\n{'simulator':<16} {'recorded steps/s':>16}  video / strip")
    for env_id, sps in result.steps_per_second.items():
        print(f"{env_id:<16} {sps:>16.1f}  {result.videos[env_id]}  {result.strips[env_id]}")
    if result.imagined:
        print(f"\n{'world model':<34} {'PSNR dB':>8} {'copy-last dB':>12} {'frames/s':>9}  video / strip")
    for key, scores in result.imagined.items():
        print(
            f"{key:<34} {scores['psnr']:>8.2f} {scores['copy_last_psnr']:>12.2f} {scores['frames_per_second']:>9.1f}"
            f"  {result.videos[key]}  {result.strips[key]}"
        )
    return 0
