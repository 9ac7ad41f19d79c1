"""GE-Sim as an environment: end-effector actions in, every camera's next frame drawn by the DiT out.

:class:`GeSimCore` is the batched torch core; :class:`GESimWorldEnv` and :class:`GESimWorldVectorEnv` are the
Gymnasium adapters (``gym.make("genie_env/GESim-FetchPush-v0")``); :class:`~envs.sb3.SB3WorldVecEnv` wraps the same
core for stable-baselines3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack, get_args

import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces

from envs.adapters import WorldEnv, WorldVectorEnv
from envs.core import REWARD_MODES, CoreStep, RewardMode, WorldCore, head_step
from envs.loading import resolve_world
from genie_env.kinematics import EndEffectorKinematics
from genie_env.models.gesim.world import GeSimWorldModel, Schedule, decode_future, load_world_model
from genie_env.models.heads import WorldHeads, load_bundle_heads
from genie_env.precision import Precision
from genie_env.start_states import StartStates, frames_to_float

FETCH_DISTANCE_THRESHOLD = 0.05
"""Fetch's success radius (metres); its sparse reward is ``-(distance > threshold)``."""

RewardType = Literal["sparse", "dense"]
"""Fetch's two rewards: ``sparse`` ``-(distance > 0.05)`` (``FetchReach-v4``) or ``dense`` ``-distance``
(``FetchReachDense-v4``); success is the same either way."""

# Tasks whose goal is about the object (else about the gripper tip, as FetchReach).
_OBJECT_TASKS = ("FetchPush", "FetchPickAndPlace", "FetchSlide")


class GeSimCore(WorldCore):
    """``num_envs`` GE-Sim worlds stepped together.

    State per env: a ring buffer of the last ``memory_span`` frames' VAE latents, tip states and cameras (memory
    is re-chosen from it every step, evenly spaced with the newest frame always included, as the rollout of
    :class:`~genie_env.models.gesim.world.GeSimWorldModel`), the current tip state (integrated from the actions by
    the fitted :class:`~genie_env.kinematics.EndEffectorKinematics`), the cameras (fixed ones stay, cameras
    attached to the gripper translate with it) and the episode's goal.

    Args:
        world: The GE-Sim world model (one frame per prediction).
        bank: Start states recorded from Fetch (frames, tip state, cameras, goal, fitted kinematics).
        num_envs: Batch size.
        heads: Learned heads; the object head gives the object position for object tasks' rewards.
        task: Env id (``"FetchPush-v4"``) or task text selecting the bank's starts; ``None``: all.
        steps: Sampler steps per frame (default: the bundle's).
        schedule: ``"linear"`` or ``"karras"`` (default: the bundle's).
        memory_span: Frames of history memory is chosen from (bounds memory however long an episode runs).
        reward_mode: How head probabilities become rewards (:func:`envs.core.head_step`).
        reward_type: Fetch's ``"sparse"`` or ``"dense"`` goal reward (:data:`RewardType`).
        device: Torch device.
        precision: ``"float32"`` or ``"bfloat16"`` arithmetic in a step (:mod:`genie_env.precision`).
        model_id: Name reported in ``info``.
    """

    def __init__(
        self,
        world: GeSimWorldModel,
        bank: StartStates,
        num_envs: int = 1,
        *,
        heads: WorldHeads | None = None,
        task: str | None = None,
        steps: int | None = None,
        schedule: Schedule | None = None,
        memory_span: int = 32,
        reward_mode: RewardMode = "mean",
        reward_type: RewardType = "sparse",
        device: torch.device | str = "cpu",
        precision: Precision = "float32",
        model_id: str = "gesim",
    ) -> None:
        super().__init__(num_envs, device, precision)
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if reward_type not in get_args(RewardType):
            raise ValueError(f"reward_type must be one of {get_args(RewardType)}, got {reward_type!r}")
        self.reward_type: RewardType = reward_type
        if isinstance(memory_span, bool) or not isinstance(memory_span, int) or memory_span < 1:
            raise ValueError(f"memory_span must be an integer >= 1, got {memory_span!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if schedule not in (None, "linear", "karras"):
            raise ValueError(f"schedule must be 'linear' or 'karras', got {schedule!r}")
        missing = [k for k in ("state", "extrinsics", "intrinsics") if k not in bank.extras]
        if missing or "kinematics" not in bank.meta:
            raise ValueError(f"a GE-Sim bank needs tip states, cameras and fitted kinematics; it lacks {missing}")
        absent = [c for c in world.cameras if c not in bank.cameras]
        if absent:
            raise ValueError(f"the model's cameras {absent} are not in the bank (it has {bank.cameras})")
        self.bank = _select_task(bank, task)
        self.env_id = str(self.bank.meta.get("env_id", ""))
        self.task = task or self.env_id
        self.world = world.to(self.device).eval()
        self.heads = heads.to(self.device).eval() if heads is not None else None
        self.kinematics = EndEffectorKinematics.from_json(self.bank.meta["kinematics"])
        self.steps_per_frame = steps or world.steps
        self.schedule: Schedule = schedule or world.schedule
        self.memory_span, self.reward_mode, self.model_id = memory_span, reward_mode, model_id
        self.render_fps = float(self.bank.meta.get("fps", 25.0))

        views = [self.bank.cameras.index(c) for c in world.cameras]
        self.cameras = list(world.cameras)
        self.bank_frames = frames_to_float(self.bank.frames[:, views, 0]).to(self.device)  # (N, V, 3, H, W)
        extras = {k: v.to(self.device) for k, v in self.bank.extras.items()}
        self.bank_state = extras["state"][:, 0]  # (N, 8)
        self.bank_extrinsics = extras["extrinsics"][:, views, 0]  # (N, V, 4, 4)
        self.bank_intrinsics = extras["intrinsics"][:, views]  # (N, V, 3, 3)
        self.bank_goal = extras.get("goal")  # (N, 3) or None
        self.bank_tasks = torch.tensor([self._task_id(t) for t in (self.bank.tasks or [""] * len(self.bank))])
        attached = self.bank.meta.get("attached_cameras", [])
        self.attached = torch.tensor([c in attached for c in self.cameras], device=self.device)

        n, v = self.num_envs, len(self.cameras)
        _, _, height, width = self.bank_frames.shape[1:]
        sf = world.spatial_factor
        z = world.vae.config.z_dim
        self.latent_size = (height // sf, width // sf)
        self.latents = torch.zeros(n, memory_span, v, z, *self.latent_size, device=self.device)
        # Each frame's trajectory and ray maps at latent resolution, drawn once when the frame happens.
        self.maps = torch.zeros(n, memory_span, v, 9, *self.latent_size, device=self.device)
        self.count = torch.zeros(n, dtype=torch.long, device=self.device)  # frames of the episode so far
        self.state = torch.zeros(n, 8, device=self.device)
        self.start_state = torch.zeros(n, 8, device=self.device)
        self.start_extrinsics = torch.zeros(n, v, 4, 4, device=self.device)
        self.intrinsics = torch.zeros(n, v, 3, 3, device=self.device)
        self.goal = torch.zeros(n, 3, device=self.device)
        self.task_ids = torch.zeros(n, dtype=torch.long, device=self.device)
        self.current = torch.zeros(n, v, 3, height, width, device=self.device)
        self.previous = torch.zeros_like(self.current)
        self.object = torch.full((n, 3), float("nan"), device=self.device)
        # Memory indices for every history length m = 1 .. span, relative to the oldest frame in view.
        table = np.stack([world.memory_indices(m) for m in range(1, memory_span + 1)])
        self.memory_table = torch.as_tensor(table, dtype=torch.long, device=self.device)  # (span, M)

        image = spaces.Box(0, 255, (height, width, 3), np.uint8)
        entries: dict[str, spaces.Space] = {camera: image for camera in self.cameras}
        # Bounds that every reachable value respects: the workspace, unit quaternions, the opening range, the goals.
        kin = self.kinematics
        state_low = np.array([*kin.low, -1, -1, -1, -1, 0.0], np.float32)
        # Fetch's fingers open at most 0.05 m each; the fitted kinematics keeps the opening below what was recorded.
        state_high = np.array([*kin.high, 1, 1, 1, 1, max(kin.max_opening, 0.1)], np.float32)
        entries["state"] = spaces.Box(state_low, state_high, (8,), np.float32)
        if self.bank_goal is not None:
            goals = self.bank_goal.cpu().numpy()
            entries["goal"] = spaces.Box(goals.min(0), goals.max(0), (3,), np.float32)
        self.single_observation_space = spaces.Dict(entries)
        self.single_action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _task_id(self, text: str) -> int:
        return self.world.task_id(text) if text in self.world.tasks else self.world.default_task_id

    # -- protocol ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def restart(self, env_ids: np.ndarray, starts: np.ndarray) -> None:
        ids = torch.as_tensor(np.asarray(env_ids), dtype=torch.long, device=self.device)
        rows = torch.as_tensor(np.asarray(starts), dtype=torch.long, device=self.device)
        frames = self.bank_frames[rows]
        with self.autocast():
            latents = self.world.encode(frames[:, :, None]).float()
        self.latents[ids, 0] = rearrange(latents, "b v c 1 h w -> b v c h w")
        self.state[ids] = self.start_state[ids] = self.bank_state[rows]
        self.start_extrinsics[ids] = self.bank_extrinsics[rows]
        self.intrinsics[ids] = self.bank_intrinsics[rows]
        maps = self.world.frame_maps(
            self.start_state[ids][:, None],
            self.start_extrinsics[ids][:, :, None],
            self.intrinsics[ids],
            self.latent_size,
        )
        self.maps[ids, 0] = rearrange(maps, "b v c 1 h w -> b v c h w")
        if self.bank_goal is not None:
            self.goal[ids] = self.bank_goal[rows]
        self.task_ids[ids] = self.bank_tasks[rows].to(self.device)
        self.count[ids] = 1
        self.current[ids] = self.previous[ids] = frames
        self.object[ids] = float("nan")
        self.mark_restarted(np.asarray(env_ids))

    def _cameras(self, state: torch.Tensor) -> torch.Tensor:
        """``(B, V, 4, 4)``: fixed cameras as at the start, attached ones translated with the tip."""
        shift = state[:, :3] - self.start_state[:, :3]
        moved = self.start_extrinsics.clone()
        moved[:, :, :3, 3] += shift[:, None] * self.attached[None, :, None]
        return moved

    def memory_frames(self) -> torch.Tensor:
        """``(B, M)`` episode frame indices the next step's memory is made of (the newest frame last)."""
        seen = self.count.clamp(max=self.memory_span)
        return self.memory_table[seen - 1] + (self.count - seen)[:, None]

    def _memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory latents ``(B, V, C, M, h, w)`` and the memory frames' maps ``(B, V, 9, M, h, w)``."""
        slot = self.memory_frames() % self.memory_span
        rows = torch.arange(self.num_envs, device=self.device)[:, None]
        latents = rearrange(self.latents[rows, slot], "b m v c h w -> b v c m h w")
        return latents, rearrange(self.maps[rows, slot], "b m v c h w -> b v c m h w")

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> CoreStep:
        actions = actions.to(self.device, torch.float32).reshape(self.num_envs, 4)
        state = self.kinematics.step(self.state, actions)
        cameras = self._cameras(state)
        memory_frames = self.memory_frames()
        memory, memory_maps = self._memory()
        # The memory frames' maps were drawn when they happened; only the new frame's are drawn now.
        new_maps = self.world.frame_maps(state[:, None], cameras[:, :, None], self.intrinsics, self.latent_size)
        with self.autocast():
            latents = self.world.sample_future(
                memory,
                torch.cat([memory_maps, new_maps], dim=3),
                task_ids=self.task_ids,
                steps=self.steps_per_frame,
                schedule=self.schedule,
                generator=self.generator,
            )
            frames = decode_future(self.world.vae, latents, self.world.future_encoding)  # (B, V, 1, 3, H, W)
            frames = frames[:, :, 0].float()
            # As the world model's rollout: memory holds the generated frames re-encoded from pixels.
            encoded = self.world.encode(frames[:, :, None]).float()
        slot = self.count % self.memory_span
        rows = torch.arange(self.num_envs, device=self.device)
        self.latents[rows, slot] = rearrange(encoded, "b v c 1 h w -> b v c h w")
        self.maps[rows, slot] = rearrange(new_maps, "b v c 1 h w -> b v c h w")
        self.count += 1
        self.state = state
        self.previous, self.current = self.current, frames
        out = self._outcomes()
        out.info["memory_indices"] = memory_frames  # which past frames this step's memory was made of
        return out

    def _outcomes(self) -> CoreStep:
        predictions: dict[str, torch.Tensor] = {}
        if self.heads is not None:
            cfg = self.heads.config
            state = self.state if cfg.state_dim else None
            goal = self.goal if cfg.goal_dim and self.bank_goal is not None else None
            predictions = self.heads.predict(self.previous, self.current, state, goal)
        table = None if self.heads is None else self.heads.reward_table
        out = head_step(predictions, table, self.reward_mode, self.generator, self.num_envs)
        info = out.info
        if "object" in predictions:
            self.object = predictions["object"].float()
            info["object"] = self.object
        if self.bank_goal is not None and self.env_id.startswith("Fetch"):
            # Fetch's own reward on the achieved goal: the object (from the head) or the gripper tip.
            achieved = self.object if self.env_id.startswith(_OBJECT_TASKS) else self.state[:, :3]
            if not torch.isnan(achieved).any():
                distance = torch.linalg.vector_norm(achieved - self.goal, dim=-1)
                sparse = -(distance > FETCH_DISTANCE_THRESHOLD).float()
                out.reward = (sparse if self.reward_type == "sparse" else -distance).cpu()
                info["goal_distance"] = distance
                info["is_success"] = distance <= FETCH_DISTANCE_THRESHOLD
        return out

    def observation(self) -> dict[str, torch.Tensor]:
        obs = {camera: self.current[:, i] for i, camera in enumerate(self.cameras)}
        obs["state"] = self.state
        if self.bank_goal is not None:
            obs["goal"] = self.goal
        return obs

    def frames(self) -> torch.Tensor:
        return self.current

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "task": self.task,
            "memory_frames": int(self.world.n_memory),
            "memory_span": self.memory_span,
            "denoise_steps": self.steps_per_frame,
            "schedule": self.schedule,
            "reward_type": self.reward_type,
            "precision": self.precision,
        }


def _select_task(bank: StartStates, task: str | None) -> StartStates:
    """The bank's starts for ``task`` (an env id matching the recording, or a task text)."""
    if task is None or task == bank.meta.get("env_id"):
        return bank
    rows = [i for i, t in enumerate(bank.tasks) if t == task]
    if not rows:
        known = sorted({str(bank.meta.get("env_id", "")), *bank.tasks} - {""})
        raise ValueError(f"the bundle has no start states for task {task!r}; it has {known}")
    return bank.select(rows)


class GeSimOptions(TypedDict, total=False):
    """Keyword options of every GE-Sim env (see :class:`GESimWorldEnv`)."""

    task: str | None
    device: torch.device | str
    denoise_steps: int | None
    schedule: Schedule | None
    memory_span: int
    reward_mode: RewardMode
    reward_type: RewardType
    precision: Precision


def build_gesim_core(
    checkpoint: str | os.PathLike[str], num_envs: int = 1, **options: Unpack[GeSimOptions]
) -> GeSimCore:
    """A :class:`GeSimCore` from a bundle directory or a shipped asset name."""
    root = resolve_world(checkpoint)
    world = load_world_model(root, device=options.get("device", "cpu"))
    steps = options.pop("denoise_steps", None)
    return GeSimCore(
        world,
        StartStates.load(root),
        num_envs,
        heads=load_bundle_heads(root),
        steps=steps,
        model_id=Path(root).name,
        **options,  # type: ignore[arg-type]
    )


class GESimWorldEnv(WorldEnv):
    """A GE-Sim world model as a Gymnasium environment: move the Fetch end effector, see every camera.

    **Action space**: ``Box(-1, 1, (4,), float32)``: end-effector ``dx, dy, dz`` (Fetch's scale; the tip moves
    by the per-axis gain fitted on the recording, about 3 cm per unit) and the gripper command.

    **Observation space**: a flat ``Dict``: one ``Box(0, 255, (64, 64, 3), uint8)`` per camera (``front``,
    ``side``, ``hand`` for the Fetch recordings), ``state`` ``(8,)`` (tip xyz, quaternion xyzw, gripper
    opening) and ``goal`` ``(3,)`` where the recording has goals.

    **Starting state**: a real first frame of a recorded episode (all cameras, tip state, cameras and the
    episode's goal) drawn with ``np_random``.

    **Rewards**: Fetch's sparse reward ``-(distance > 0.05)`` (or with ``reward_type="dense"`` ``-distance``, as
    ``FetchReachDense-v4``) between the goal and the achieved goal: the tip for FetchReach, the object position
    predicted by the bundle's object head for FetchPush (reward 0 without heads). ``info`` holds
    ``goal_distance`` and ``is_success``.

    **Episode end**: Fetch never terminates (unless a termination head says so); truncation at 50 steps
    from the registered id's ``TimeLimit``.

    **Info**: ``model_id``, ``task``, ``memory_frames``, ``memory_span``, ``denoise_steps``, ``schedule``,
    ``step``, ``timing``, ``memory_indices`` (the episode frames the step's memory was made of).

    Args:
        checkpoint: Bundle directory or shipped asset name.
        render_mode: ``None``, ``"rgb_array"`` (cameras side by side) or ``"human"``.
        task: Env id or task text selecting the start states (``None``: all of the bank).
        device: Torch device.
        denoise_steps: Euler steps per frame (default: the bundle's).
        schedule: ``"linear"`` or ``"karras"`` (default: the bundle's).
        memory_span: Frames of history memory frames are chosen from.
        reward_mode: ``"mean"``, ``"mode"`` or ``"sample"`` for head-based rewards.
        reward_type: ``"sparse"`` (Fetch's default) or ``"dense"`` goal reward.
        precision: ``"float32"`` (default) or ``"bfloat16"`` arithmetic; bfloat16 is faster on CPUs with AMX
            and on GPUs (:mod:`genie_env.precision`).

    Version history:
        * v0: first release (64x64, three cameras).
    """

    def __init__(
        self, checkpoint: str | os.PathLike[str], render_mode: str | None = None, **options: Unpack[GeSimOptions]
    ) -> None:
        super().__init__(build_gesim_core(checkpoint, 1, **options), render_mode)


class GESimWorldVectorEnv(WorldVectorEnv):
    """``num_envs`` :class:`GESimWorldEnv` stepped as one batch (``gym.make_vec(..., "vector_entry_point")``).

    Args:
        num_envs: Batch size.
        checkpoint: Bundle directory or shipped asset name.
        max_episode_steps: Truncation horizon (``gym.make_vec`` passes the registered one).
        render_mode: ``None`` or ``"rgb_array"``.
        task, device, denoise_steps, schedule, memory_span, reward_mode, reward_type, precision: as
            :class:`GESimWorldEnv`.
    """

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | os.PathLike[str] = "",
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        **options: Unpack[GeSimOptions],
    ) -> None:
        super().__init__(build_gesim_core(checkpoint, num_envs, **options), max_episode_steps, render_mode)
