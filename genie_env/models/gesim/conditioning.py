"""GE-Sim's per-frame conditioning from recorded robot state and cameras: trajectory maps and ray maps.

Inputs are what a Fetch dataset row (or a GE-Sim env state) holds: the end-effector tip pose and gripper
opening (``observation.state`` = xyz, quaternion xyzw, opening; base frame, metres), and per view the
camera-to-base extrinsics (OpenCV) and intrinsics at the recorded size. Outputs are at pixel resolution;
resize them to latent resolution with :func:`torch.nn.functional.interpolate` (as GE-Sim does) or draw them
directly at the target size by passing scaled intrinsics (see :func:`genie_env.geometry.scale_intrinsics`).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat

from genie_env.geometry import pose_from_pos_quat, ray_maps, trajectory_maps

DISC_RADIUS_M = 0.03
"""Default physical radius of the tip disc: about 2 px from 1 m at 64x64 (4 % of the image height, where GE-Sim's
discs at 384x512 are 10-20 %); a world's own value is in its bundle (``world_model.json``)."""


def conditioning_maps(
    state: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    max_opening: float = 0.1,
    disc_radius_m: float = DISC_RADIUS_M,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trajectory and ray maps of every view and frame, for one arm.

    Args:
        state: ``(T, 8)`` tip xyz, quaternion xyzw, gripper opening (base frame, metres).
        extrinsics: ``(V, T, 4, 4)`` camera-to-base, OpenCV convention.
        intrinsics: ``(V, 3, 3)`` for an image of ``(height, width)``.
        height: map height in pixels.
        width: map width in pixels.
        max_opening: gripper opening that maps to the darkest disc colour (Fetch: 0.1 m).
        disc_radius_m: physical radius of the tip disc (metres; see :func:`genie_env.geometry.trajectory_maps`).

    Returns:
        ``(traj, ray)``: ``(V, T, 3, H, W)`` in [0, 1] and ``(V, T, 6, H, W)`` (origin, unit direction).
    """
    if state.ndim != 2 or state.shape[-1] != 8:
        raise ValueError(f"state must be (T, 8) [xyz, quat xyzw, opening], got {tuple(state.shape)}")
    views = extrinsics.shape[0]
    if extrinsics.shape[1:] != (state.shape[0], 4, 4) or intrinsics.shape != (views, 3, 3):
        raise ValueError(
            f"expected extrinsics (V, {state.shape[0]}, 4, 4) and intrinsics (V, 3, 3), "
            f"got {tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}"
        )
    traj, ray = _maps(state[None], extrinsics[None], intrinsics[None], height, width, max_opening, disc_radius_m)
    return traj[0], ray[0]


def _maps(
    state: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    max_opening: float,
    disc_radius_m: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(B, T, 8)``, ``(B, V, T, 4, 4)``, ``(B, V, 3, 3)`` -> ``(B, V, T, 3 | 6, H, W)`` maps (one arm)."""
    views, frames = extrinsics.shape[1:3]
    state = state.to(torch.float32)
    pose = pose_from_pos_quat(state[..., :3], state[..., 3:7])  # (B, T, 4, 4)
    pose = repeat(pose, "b t i j -> b v t 1 i j", v=views)
    grip = repeat(state[..., 7], "b t -> b v t 1", v=views)
    k = repeat(intrinsics.to(torch.float32), "b v i j -> b v t i j", t=frames)
    c2w = extrinsics.to(torch.float32)
    traj = trajectory_maps(pose, grip, k, c2w, height, width, max_opening=max_opening, radius_m=disc_radius_m)
    return traj, ray_maps(k, c2w, height, width)


def maps_to_uint8(maps: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` maps in [0, 1] -> ``(..., H, W, 3)`` uint8 images for viewing."""
    return rearrange((maps.clamp(0, 1) * 255).round().to(torch.uint8), "... c h w -> ... h w c")


def batch_conditioning_maps(
    state: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    max_opening: float = 0.1,
    disc_radius_m: float = DISC_RADIUS_M,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`conditioning_maps` for a batch of windows, in the DiT's ``(B, V, C, T, H, W)`` layout.

    Args:
        state: ``(B, T, 8)`` tip xyz, quaternion xyzw, gripper opening (base frame, metres).
        extrinsics: ``(B, V, T, 4, 4)`` camera-to-base, OpenCV convention.
        intrinsics: ``(B, V, 3, 3)`` for an image of ``(height, width)``.
        height: map height in pixels.
        width: map width in pixels.
        max_opening: gripper opening that maps to the darkest disc colour (Fetch: 0.1 m).
        disc_radius_m: physical radius of the tip disc (metres).

    Returns:
        ``(traj, ray)``: ``(B, V, 3, T, H, W)`` in [0, 1] and ``(B, V, 6, T, H, W)`` (origin, unit direction).

    Raises:
        ValueError: If the shapes disagree.
    """
    if state.ndim != 3 or state.shape[-1] != 8:
        raise ValueError(f"state must be (B, T, 8) [xyz, quat xyzw, opening], got {tuple(state.shape)}")
    batch, frames = state.shape[:2]
    if extrinsics.ndim != 5 or extrinsics.shape[0] != batch or tuple(extrinsics.shape[2:]) != (frames, 4, 4):
        raise ValueError(f"extrinsics must be (B={batch}, V, T={frames}, 4, 4), got {tuple(extrinsics.shape)}")
    views = extrinsics.shape[1]
    if tuple(intrinsics.shape) != (batch, views, 3, 3):
        raise ValueError(f"intrinsics must be (B={batch}, V={views}, 3, 3), got {tuple(intrinsics.shape)}")
    traj, ray = _maps(state, extrinsics, intrinsics, height, width, max_opening, disc_radius_m)
    layout = "b v t c h w -> b v c t h w"
    return rearrange(traj, layout), rearrange(ray, layout)
