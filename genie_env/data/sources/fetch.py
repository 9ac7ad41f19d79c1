"""MuJoCo Fetch (gymnasium-robotics) recorded from three cameras, with every camera's geometry.

Frames of reference: everything geometric is expressed in the **robot base frame** (``robot0:base_link``),
in metres, the frame GE-Sim's ray and trajectory maps use. Cameras follow the OpenCV convention
(x right, y down, z forward); see :mod:`genie_env.data.sources.mujoco_cameras`.

Views:

* ``front``: fixed, across the table looking at the robot (azimuth 180, elevation -35, 1.6 m).
* ``side``: fixed, from the side of the table (azimuth 90, elevation -35, 1.6 m).
* ``hand``: moves with the gripper: behind, to the right of and above the gripper tip, looking down past the
  fingers at the table (it translates with the tip; Fetch keeps the gripper orientation fixed).

Per-frame features (row ``t`` is the state *at* frame ``t``):

=========================================  ==========  ==================================================
``observation.images.<cam>``               (H, W, 3)   uint8 RGB
``observation.cameras.<cam>.extrinsics``   (4, 4)      camera-to-base, OpenCV convention
``observation.state``                      (8,)        tip xyz, tip quaternion xyzw, gripper opening (m)
``observation.goal``                       (3,)        goal position, base frame
``observation.object``                     (3,)        object position, base frame (Push, PickAndPlace)
``observation.env``                        (n,)        the simulator's own observation vector (world frame)
``observation.desired_goal``               (3,)        the simulator's goal (world frame)
``action``                                 (4,)        dx, dy, dz, gripper in [-1, 1] taken *at* frame t
=========================================  ==========  ==================================================

The end effector is the ``robot0:grip`` site, the point between the finger tips (so no tool offset is
needed, unlike AgiBot's 0.23 m flange-to-tip offset). Fetch moves it by ``0.05 * action[:3]`` metres per
step through a mocap body.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from scipy.spatial.transform import Rotation

from genie_env.data.features import Feature
from genie_env.data.sources.base import Frame, RealSource, StepResult
from genie_env.data.sources.mujoco_cameras import CameraSpec, MultiViewRenderer

#: Fetch task ids we record, and whether the task has an object.
FETCH_TASKS: dict[str, bool] = {"FetchReach-v4": False, "FetchPush-v4": True, "FetchPickAndPlace-v4": True}

#: The three recording cameras. The table centre is about (1.3, 0.75, 0.4) in the world frame.
FETCH_CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec("front", lookat=(1.3, 0.75, 0.45), distance=1.6, azimuth=180.0, elevation=-35.0),
    CameraSpec("side", lookat=(1.3, 0.75, 0.45), distance=1.6, azimuth=90.0, elevation=-35.0),
    CameraSpec(
        "hand", lookat=(0.1, 0.0, -0.1), distance=0.55, azimuth=-30.0, elevation=-55.0, follow_site="robot0:grip"
    ),
)

GRIP_SITE = "robot0:grip"
BASE_BODY = "robot0:base_link"
FINGER_JOINTS = ("robot0:l_gripper_finger_joint", "robot0:r_gripper_finger_joint")
#: Metres the gripper tip moves per unit of action (gymnasium-robotics ``pos_ctrl *= 0.05``).
FETCH_ACTION_SCALE = 0.05

STATE_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_opening"]


def _pose(xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """4x4 homogeneous pose from a MuJoCo position and a flattened rotation matrix."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(xmat, dtype=np.float64).reshape(3, 3)
    pose[:3, 3] = xpos
    return pose


class FetchSource(RealSource):
    """Records a Fetch task with three cameras and the geometry GE-Sim needs.

    Args:
        env_id: one of :data:`FETCH_TASKS`.
        size: image height and width in pixels.
        max_episode_steps: episode length in actions (default: the task's own, 50).
    """

    def __init__(self, env_id: str, size: int = 64, max_episode_steps: int | None = None) -> None:
        if env_id not in FETCH_TASKS:
            raise ValueError(f"unknown Fetch task {env_id!r}; expected one of {sorted(FETCH_TASKS)}")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        kwargs: dict[str, Any] = {}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self.env_id = env_id
        self.env = gym.make(env_id, **kwargs)
        self.max_episode_steps = self.env.spec.max_episode_steps if self.env.spec else max_episode_steps
        self.has_object = FETCH_TASKS[env_id]
        self.size = size
        unwrapped = self.env.unwrapped
        self.fps = 1.0 / float(unwrapped.dt)
        self.task = {
            "FetchReach-v4": "move the gripper to the goal",
            "FetchPush-v4": "push the block to the goal",
            "FetchPickAndPlace-v4": "pick up the block and place it at the goal",
        }[env_id]
        self.action_space = self.env.action_space
        self.renderer = MultiViewRenderer(unwrapped.model, size, size, list(FETCH_CAMERAS))
        self._env_obs_dim = int(self.env.observation_space["observation"].shape[0])
        self._intrinsics: dict[str, np.ndarray] | None = None
        self._closed = False

    # ------------------------------------------------------------------ description
    @property
    def features(self) -> dict[str, Feature]:
        """See the module docstring."""
        intr = self.intrinsics
        feats: dict[str, Feature] = {}
        for spec in FETCH_CAMERAS:
            feats[f"observation.images.{spec.name}"] = Feature(
                "video",
                (self.size, self.size, 3),
                info={
                    "camera.intrinsics": intr[spec.name].round(6).tolist(),
                    "camera.convention": "opencv",
                    "camera.moving": spec.moving,
                    "camera.extrinsics_feature": f"observation.cameras.{spec.name}.extrinsics",
                },
            )
        for spec in FETCH_CAMERAS:
            feats[f"observation.cameras.{spec.name}.extrinsics"] = Feature(
                "float32", (4, 4), info={"frame": "camera-to-base", "convention": "opencv", "units": "m"}
            )
        feats["observation.state"] = Feature("float32", (8,), STATE_NAMES, {"frame": "base", "units": "m"})
        feats["observation.goal"] = Feature("float32", (3,), ["x", "y", "z"], {"frame": "base"})
        if self.has_object:
            feats["observation.object"] = Feature("float32", (3,), ["x", "y", "z"], {"frame": "base"})
        feats["observation.env"] = Feature("float32", (self._env_obs_dim,), info={"frame": "world"})
        feats["observation.desired_goal"] = Feature("float32", (3,), ["x", "y", "z"], {"frame": "world"})
        feats["action"] = Feature("float32", (4,), ["dx", "dy", "dz", "gripper"])
        feats["reward"] = Feature("float32", (1,))
        feats["terminated"] = Feature("bool", (1,))
        feats["truncated"] = Feature("bool", (1,))
        feats["is_success"] = Feature("bool", (1,))
        return feats

    @property
    def intrinsics(self) -> dict[str, np.ndarray]:
        """Per camera, the (3, 3) intrinsics at the recorded size (constant over time)."""
        if self._intrinsics is None:
            _, intr, _ = self.renderer.render(self.env.unwrapped.data)
            self._intrinsics = intr
        return self._intrinsics

    def metadata(self) -> dict[str, Any]:
        """Base pose in the world and conventions, for ``meta/info.json``."""
        data = self.env.unwrapped.data
        return {
            "robot_type": "fetch",
            "base_frame": BASE_BODY,
            "base_to_world": _pose(data.body(BASE_BODY).xpos, data.body(BASE_BODY).xmat).round(8).tolist(),
            "end_effector": GRIP_SITE,
            "action_scale_m": FETCH_ACTION_SCALE,
            "max_episode_steps": self.max_episode_steps,
            "cameras": [spec.__dict__ for spec in FETCH_CAMERAS],
        }

    # ------------------------------------------------------------------ recording
    def _world_to_base(self) -> np.ndarray:
        data = self.env.unwrapped.data
        return np.linalg.inv(_pose(data.body(BASE_BODY).xpos, data.body(BASE_BODY).xmat))

    def _frame(self, obs: dict[str, np.ndarray]) -> Frame:
        unwrapped = self.env.unwrapped
        data = unwrapped.data
        w2b = self._world_to_base()
        images, intrinsics, c2w = self.renderer.render(data)
        if self._intrinsics is None:
            self._intrinsics = intrinsics
        frame: Frame = {f"observation.images.{k}": v for k, v in images.items()}
        for name, pose in c2w.items():
            frame[f"observation.cameras.{name}.extrinsics"] = (w2b @ pose).astype(np.float32)
        tip = w2b @ _pose(data.site(GRIP_SITE).xpos, data.site(GRIP_SITE).xmat)
        quat = Rotation.from_matrix(tip[:3, :3]).as_quat()  # xyzw
        opening = sum(float(data.joint(j).qpos[0]) for j in FINGER_JOINTS)
        frame["observation.state"] = np.concatenate([tip[:3, 3], quat, [opening]]).astype(np.float32)
        goal = np.asarray(unwrapped.goal, dtype=np.float64)
        frame["observation.goal"] = (w2b[:3, :3] @ goal + w2b[:3, 3]).astype(np.float32)
        if self.has_object:
            obj = data.site("object0").xpos
            frame["observation.object"] = (w2b[:3, :3] @ obj + w2b[:3, 3]).astype(np.float32)
        frame["observation.env"] = np.asarray(obs["observation"], dtype=np.float32)
        frame["observation.desired_goal"] = np.asarray(obs["desired_goal"], dtype=np.float32)
        return frame

    def reset(self, seed: int) -> Frame:
        """Reset the simulator with ``seed`` and return frame 0."""
        self._check_open()
        obs, _ = self.env.reset(seed=int(seed))
        return self._frame(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply a ``(4,)`` action in [-1, 1] (values outside are clipped, as Fetch does)."""
        self._check_open()
        act = np.asarray(action, dtype=np.float32)
        if act.shape != (4,):
            raise ValueError(f"Fetch action must have shape (4,), got {act.shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"Fetch action must be finite, got {act}")
        act = np.clip(act, -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(act)
        frame = self._frame(obs)
        return StepResult(
            frame, float(reward), bool(terminated), bool(truncated), {"is_success": bool(info.get("is_success", 0.0))}
        )

    def segmentation(self, camera: str) -> np.ndarray:
        """MuJoCo's segmentation render of one view (int32 (H, W, 2): object id, object type)."""
        self._check_open()
        return self.renderer.render_segmentation(self.env.unwrapped.data, camera)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.env_id} source is closed")

    def close(self) -> None:
        """Close the renderer and the simulator (idempotent)."""
        if not self._closed:
            self.renderer.close()
            self.env.close()
            self._closed = True
