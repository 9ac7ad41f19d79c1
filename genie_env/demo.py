"""``genie-env demo``: record the real simulators our worlds are learned from and show what was recorded.

For now the demo shows the *real* side of the pipeline: it records FetchPush (three cameras, scripted
policy) and Atari Boxing into datasets, then writes, per simulator, a preview mp4 and a PNG strip of the
views side by side, and prints the recording speed. For Fetch a second row shows the trajectory maps GE-Sim
is conditioned on, drawn from the recorded tip pose and camera geometry: the disc follows the gripper in
every view when the geometry is right. Later, the world models appear next to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genie_env.data.collect import collect
from genie_env.data.lerobot import LeRobotDataset
from genie_env.models.gesim.conditioning import conditioning_maps, maps_to_uint8
from genie_env.viz import save_png, save_preview_video, stack_rows, strip, tile_views, upscale


@dataclass
class DemoResult:
    """Files the demo wrote and what it measured, per simulator."""

    videos: dict[str, Path]
    strips: dict[str, Path]
    steps_per_second: dict[str, float]


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
    return result


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
    return 0
