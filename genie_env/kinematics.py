"""How a Fetch end effector moves under an action, fitted on recordings, for the GE-Sim environment.

GE-Sim draws frames from the end-effector path; the environment must turn the user's Fetch action
``(dx, dy, dz, gripper)`` in ``[-1, 1]`` into the next tip pose. Fetch scales the position part by 0.05 m and
moves a mocap target; the tip lags behind it, and on our recordings it moves about 0.03 m per unit action per step
(``genie-env collect`` data: 1.5-2.8 mm residual). So the per-axis gain is fitted by least squares on the
recording, positions are clipped to the box the recorded tips stayed in (the workspace), the orientation is held,
and the gripper opening follows a fitted affine map of (opening, gripper action).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from genie_env.data.lerobot import LeRobotDataset


@dataclass(frozen=True)
class EndEffectorKinematics:
    """Tip position integrates ``gain * action[:3]`` inside ``[low, high]``; opening follows ``gripper``.

    Attributes:
        gain: ``(3,)`` metres per unit action per step, per axis.
        low: ``(3,)`` lower corner of the workspace box (metres, base frame).
        high: ``(3,)`` upper corner.
        gripper: ``(3,)`` ``opening' = clip(g0 * opening + g1 * action[3] + g2, 0, max_opening)``.
        max_opening: largest recorded opening (metres).
    """

    gain: tuple[float, float, float]
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    gripper: tuple[float, float, float]
    max_opening: float

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next tip states ``(B, 8)`` from states ``(B, 8)`` (xyz, quat xyzw, opening) and actions ``(B, 4)``."""
        gain = state.new_tensor(self.gain)
        position = state[:, :3] + gain * action[:, :3].to(state.dtype)
        position = torch.minimum(torch.maximum(position, state.new_tensor(self.low)), state.new_tensor(self.high))
        g0, g1, g2 = self.gripper
        opening = (g0 * state[:, 7] + g1 * action[:, 3].to(state.dtype) + g2).clamp(0.0, self.max_opening)
        return torch.cat([position, state[:, 3:7], opening[:, None]], dim=1)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndEffectorKinematics:
        """Inverse of :meth:`to_json`."""
        return cls(
            tuple(data["gain"]),  # type: ignore[arg-type]
            tuple(data["low"]),  # type: ignore[arg-type]
            tuple(data["high"]),  # type: ignore[arg-type]
            tuple(data["gripper"]),  # type: ignore[arg-type]
            float(data["max_opening"]),
        )


def fit_kinematics(dataset: LeRobotDataset, episodes: list[int] | None = None) -> EndEffectorKinematics:
    """Least-squares fit of :class:`EndEffectorKinematics` on a Fetch recording.

    Raises:
        ValueError: If the dataset has no ``observation.state`` (tip state) or no 4-D actions.
    """
    episodes = list(range(dataset.num_episodes)) if episodes is None else episodes
    actions, states = [], []
    for index in episodes:
        episode = dataset.load_episode(index, videos=False)
        if "observation.state" not in episode or episode["action"].shape[-1] != 4:
            raise ValueError(
                f"{dataset.root} episode {index}: need observation.state and (dx, dy, dz, gripper) actions"
            )
        actions.append(episode["action"][:-1].astype(np.float64))  # the last row has no action
        states.append(episode["observation.state"].astype(np.float64))
    a = np.concatenate(actions)
    before = np.concatenate([s[:-1] for s in states])
    after = np.concatenate([s[1:] for s in states])
    everything = np.concatenate(states)
    delta = after[:, :3] - before[:, :3]
    # Per-axis slope through the origin: a zero action keeps the tip still.
    gain = (a[:, :3] * delta).sum(0) / np.maximum((a[:, :3] ** 2).sum(0), 1e-12)
    design = np.stack([before[:, 7], a[:, 3], np.ones(len(a))], axis=1)
    gripper, *_ = np.linalg.lstsq(design, after[:, 7], rcond=None)
    return EndEffectorKinematics(
        tuple(float(g) for g in gain),  # type: ignore[arg-type]
        tuple(float(v) for v in everything[:, :3].min(0)),  # type: ignore[arg-type]
        tuple(float(v) for v in everything[:, :3].max(0)),  # type: ignore[arg-type]
        tuple(float(g) for g in gripper),  # type: ignore[arg-type]
        float(everything[:, 7].max()),
    )
