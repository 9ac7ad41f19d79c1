"""GE-Sim conditioning maps computed from a real Fetch recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genie_env.data.lerobot import LeRobotDataset
from genie_env.geometry import project_points
from genie_env.models.gesim.conditioning import conditioning_maps, maps_to_uint8


def test_maps_follow_the_recorded_gripper(fetch_dataset: Path) -> None:
    ds = LeRobotDataset(fetch_dataset)
    ep = ds.load_episode(0)
    cams = ds.camera_names
    extr = torch.from_numpy(np.stack([ep[f"observation.cameras.{c}.extrinsics"] for c in cams]))
    intr = torch.from_numpy(np.stack([ds.intrinsics(c) for c in cams])).float()
    state = torch.from_numpy(ep["observation.state"])
    traj, ray = conditioning_maps(state, extr, intr, 64, 64)
    frames = state.shape[0]
    assert traj.shape == (3, frames, 3, 64, 64) and ray.shape == (3, frames, 6, 64, 64)
    # Ray origins are the camera centres; directions are unit vectors.
    torch.testing.assert_close(ray[:, :, :3, 10, 20], extr[:, :, :3, 3])
    torch.testing.assert_close(ray[:, :, 3:].norm(dim=2), torch.ones(3, frames, 64, 64))
    # The map is not background at the projected tip, in every view and frame.
    uv, depth = project_points(state[None, :, None, :3], extr, intr[:, None])
    background = traj[0, 0, :, 0, 0]
    for v in range(3):
        for t in range(frames):
            u, w = (int(x) for x in uv[v, t, 0])
            assert depth[v, t, 0] > 0 and 0 <= u < 64 and 0 <= w < 64
            assert not torch.allclose(traj[v, t, :, w, u], background)
    img = maps_to_uint8(traj)
    assert img.shape == (3, frames, 64, 64, 3) and img.dtype == torch.uint8


def test_conditioning_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="state must be"):
        conditioning_maps(torch.zeros(5, 7), torch.eye(4).repeat(1, 5, 1, 1), torch.eye(3)[None], 8, 8)
    with pytest.raises(ValueError, match="expected extrinsics"):
        conditioning_maps(torch.zeros(5, 8), torch.eye(4).repeat(2, 4, 1, 1), torch.eye(3)[None], 8, 8)
