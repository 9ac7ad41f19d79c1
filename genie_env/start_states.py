"""Start-state banks: the real recorded frames a world-model environment resets to.

A world model cannot invent its first frame: like DIAMOND's spawn points, every ``reset()`` of a world-model env
starts from a short real prompt drawn (with the env's ``np_random``) from a bank recorded by ``genie-env collect``
and shipped next to the networks, as ``start_states.safetensors`` in the world-model bundle.

Tensors in the file (``N`` starts, ``V`` cameras, ``P`` prompt frames):

* ``frames``: ``(N, V, P, H, W, 3)`` uint8 (always);
* ``state``: ``(N, P, 8)`` float32 tip states (xyz, quaternion xyzw, gripper opening), when recorded;
* ``extrinsics``: ``(N, V, P, 4, 4)`` float32 camera-to-base (OpenCV), when recorded;
* ``intrinsics``: ``(N, V, 3, 3)`` float32, when recorded;
* ``goal``: ``(N, 3)`` float32 episode goal in the base frame (``observation.goal``), when recorded;
* ``object``: ``(N, P, 3)`` float32 object position, when recorded.

The safetensors metadata holds ``cameras`` (JSON list), ``dataset``, ``sources`` (JSON list of
``[episode, first_frame]``), so a start can be traced back to its recording, and ``seeds`` (the real simulator's
reset seed of each start's episode, where recorded), so the real simulator can be put in a start's state, and
``lead_in`` (per start, the recorded actions from the episode's first frame up to the start's last prompt frame),
so a start in mid-episode is reached by replaying them after that reset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from genie_env.checkpoint import CheckpointError
from genie_env.data.collect import episode_seeds
from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.metrics import from_uint8
from genie_env.kinematics import fit_kinematics

START_STATES_FILE = "start_states.safetensors"
"""File name of the bank inside a world-model bundle."""

# Bank entry -> recorded feature. Goals, tip states and objects are all in the robot's base frame.
_OPTIONAL = {
    "state": "observation.state",
    "goal": "observation.goal",
    "object": "observation.object",
}


@dataclass
class StartStates:
    """A bank of ``N`` real start prompts (see the module docstring for shapes).

    Attributes:
        frames: ``(N, V, P, H, W, 3)`` uint8.
        cameras: camera names in view order.
        extras: optional float32 tensors by name (``state``, ``extrinsics``, ``intrinsics``, ``goal``, ``object``).
        dataset: the recording the starts came from.
        sources: ``(episode, first_frame)`` of every start.
        tasks: the task text of every start (empty if the recording has none).
        seeds: the reset seed of every start's recorded episode (empty if the recording has none): resetting the
            real simulator with it gives the episode's first frame.
        lead_in: per start, the recorded actions (each a list of numbers) that lead from the episode's first frame
            to the start's last prompt frame (empty when the bank has none; an empty list for a first frame).
        meta: JSON-serialisable facts about the recording (``env_id``, fitted ``kinematics``, ...).
    """

    frames: torch.Tensor
    cameras: list[str]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    dataset: str = ""
    sources: list[tuple[int, int]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    lead_in: list[list[list[float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.frames.ndim != 6 or self.frames.dtype != torch.uint8 or self.frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 (N, V, P, H, W, 3), got {self.frames.dtype} {tuple(self.frames.shape)}"
            )
        if self.frames.shape[1] != len(self.cameras):
            raise ValueError(f"{self.frames.shape[1]} views in frames but cameras={self.cameras}")
        if len(self) == 0:
            raise ValueError("a start-state bank needs at least one start")
        for name, value in self.extras.items():
            if value.shape[0] != len(self):
                raise ValueError(f"extras[{name!r}] has {value.shape[0]} rows, frames {len(self)}")
        if self.tasks and len(self.tasks) != len(self):
            raise ValueError(f"{len(self.tasks)} tasks for {len(self)} starts")
        if self.seeds and len(self.seeds) != len(self):
            raise ValueError(f"{len(self.seeds)} seeds for {len(self)} starts")
        if self.lead_in and len(self.lead_in) != len(self):
            raise ValueError(f"{len(self.lead_in)} lead-ins for {len(self)} starts")

    def select(self, rows: list[int] | np.ndarray) -> StartStates:
        """The bank restricted to ``rows`` (e.g. the starts of one task)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return StartStates(
            self.frames[index],
            list(self.cameras),
            {k: v[index] for k, v in self.extras.items()},
            self.dataset,
            [self.sources[i] for i in index.tolist()] if self.sources else [],
            [self.tasks[i] for i in index.tolist()] if self.tasks else [],
            dict(self.meta),
            [self.seeds[i] for i in index.tolist()] if self.seeds else [],
            [self.lead_in[i] for i in index.tolist()] if self.lead_in else [],
        )

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def prompt_frames(self) -> int:
        """``P``, the frames of every prompt."""
        return int(self.frames.shape[2])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the bank atomically (temporary file, then rename) to ``path``; returns the path."""
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        tensors = {"frames": self.frames.contiguous(), **{k: v.contiguous() for k, v in self.extras.items()}}
        metadata = {
            "cameras": json.dumps(self.cameras),
            "dataset": self.dataset,
            "sources": json.dumps(self.sources),
            "tasks": json.dumps(self.tasks),
            "meta": json.dumps(self.meta),
            "seeds": json.dumps(self.seeds),
            "lead_in": json.dumps(self.lead_in),
        }
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StartStates:
        """Reads a bank written by :meth:`save`.

        Raises:
            CheckpointError: Naming the file, if it is missing or corrupt.
        """
        file = Path(path)
        if file.is_dir():
            file = file / START_STATES_FILE
        if not file.is_file():
            raise CheckpointError(f"start-state bank not found: {file} (build one with build_start_states)")
        try:
            tensors = load_file(str(file))
            with safe_open(str(file), "pt") as f:
                metadata = f.metadata() or {}
            cameras = json.loads(metadata["cameras"])
            sources = [tuple(s) for s in json.loads(metadata.get("sources", "[]"))]
            frames = tensors.pop("frames")
            tasks = json.loads(metadata.get("tasks", "[]"))
            meta = json.loads(metadata.get("meta", "{}"))
            seeds = [int(s) for s in json.loads(metadata.get("seeds", "[]"))]
            lead_in = json.loads(metadata.get("lead_in", "[]"))
            dataset = metadata.get("dataset", "")
            return cls(frames, cameras, tensors, dataset, sources, tasks, meta, seeds, lead_in)  # type: ignore[arg-type]
        except (SafetensorError, KeyError, ValueError, json.JSONDecodeError, OSError) as exc:
            raise CheckpointError(f"corrupt start-state bank {file}: {exc}") from exc


def build_start_states(
    dataset: str | os.PathLike[str] | LeRobotDataset,
    *,
    prompt_frames: int = 1,
    episodes: list[int] | None = None,
    per_episode: int = 1,
    offsets: Literal["start", "random"] = "start",
    cameras: list[str] | None = None,
    seed: int = 0,
) -> StartStates:
    """Cuts a start-state bank from a recording.

    Args:
        dataset: A ``genie-env collect`` dataset (path or reader).
        prompt_frames: ``P``, consecutive real frames per start (Genie primes its dynamics with several).
        episodes: Episodes to take starts from (default: all).
        per_episode: Starts per episode.
        offsets: ``"start"``: every start is the episode's first ``P`` frames (needed where the episode's goal
            and object layout belong to its beginning, as in Fetch); ``"random"``: uniformly drawn times.
        cameras: Cameras in view order (default: all of the dataset's).
        seed: Seed of the random offsets.

    Returns:
        The bank.
    """
    data = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
    cameras = list(cameras or data.camera_names)
    missing = [c for c in cameras if c not in data.camera_names]
    if missing:
        raise ValueError(f"cameras {missing} not in {data.root} (it has {data.camera_names})")
    if prompt_frames < 1 or per_episode < 1:
        raise ValueError(f"prompt_frames and per_episode must be >= 1, got {prompt_frames} and {per_episode}")
    if offsets == "start" and per_episode != 1:
        raise ValueError("offsets='start' takes one start per episode; use per_episode=1")
    rng = np.random.default_rng(seed)
    episodes = list(range(data.num_episodes)) if episodes is None else list(episodes)
    frames, extras, sources, tasks = [], {k: [] for k in (*_OPTIONAL, "extrinsics")}, [], []
    episode_tasks = {int(row["episode_index"]): row.get("tasks", []) for row in data.episodes}
    recipe = data.info.get("genie_env", {}).get("recipe", {})
    seeds: list[int] = []
    lead_in: list[list[list[float]]] = []
    intrinsics = [data.intrinsics(c) for c in cameras]
    extrinsic_keys = [f"observation.cameras.{c}.extrinsics" for c in cameras]
    attached: list[str] | None = None
    for index in episodes:
        episode = data.load_episode(index)
        if attached is None and all(k in episode for k in extrinsic_keys):
            attached = _attached_cameras(episode, cameras)
        length = len(episode[f"observation.images.{cameras[0]}"])
        if length < prompt_frames:
            raise ValueError(f"episode {index} of {data.root} has {length} frames, fewer than {prompt_frames=}")
        if offsets == "start":
            firsts = [0]
        else:
            firsts = rng.integers(0, length - prompt_frames + 1, size=per_episode).tolist()
        if "seed" in recipe:  # genie-env collect resets episode i with a seed derived from (seed, i)
            seeds += [episode_seeds(int(recipe["seed"]), int(index))[0]] * len(firsts)
        for first in firsts:
            span = slice(first, first + prompt_frames)
            frames.append(np.stack([episode[f"observation.images.{c}"][span] for c in cameras]))
            for name, key in _OPTIONAL.items():
                if key in episode:
                    extras[name].append(episode[key][span] if name != "goal" else episode[key][first])
            if all(k in episode for k in extrinsic_keys):
                extras["extrinsics"].append(np.stack([episode[k][span] for k in extrinsic_keys]))
            sources.append((int(index), int(first)))
            # action[t] takes frame t to t + 1: these reach the prompt's last frame from the episode's first.
            lead_in.append(np.asarray(episode["action"][: first + prompt_frames - 1], np.float64).tolist())
            names = episode_tasks.get(int(index))
            tasks.append(str(names[0]) if names else "")
    tensors = {
        name: torch.from_numpy(np.stack(rows)).float() for name, rows in extras.items() if len(rows) == len(sources)
    }
    if all(k is not None for k in intrinsics):
        tensors["intrinsics"] = repeat_rows(torch.from_numpy(np.stack(intrinsics)).float(), len(sources))
    meta: dict[str, Any] = {"env_id": recipe.get("env_id", ""), "fps": data.fps}
    if "state" in tensors and data.info["features"].get("action", {}).get("shape") == [4]:
        meta["kinematics"] = fit_kinematics(data, episodes).to_json()
    if "extrinsics" in tensors:
        meta["attached_cameras"] = attached
    tasks = tasks if any(tasks) else []
    stacked = torch.from_numpy(np.stack(frames))
    return StartStates(stacked, cameras, tensors, str(data.root), sources, tasks, meta, seeds, lead_in)


def _attached_cameras(episode: dict[str, np.ndarray], cameras: list[str]) -> list[str]:
    """Cameras whose extrinsics change within an episode (they translate with the gripper, as Fetch's hand view)."""
    moving = []
    for camera in cameras:
        c2w = episode[f"observation.cameras.{camera}.extrinsics"]
        if np.abs(c2w - c2w[0]).max() > 1e-5:
            moving.append(camera)
    return moving


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` stacked ``n`` times along a new leading axis."""
    return x[None].expand(n, *x.shape).contiguous()


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in ``[-1, 1]``."""
    return from_uint8(rearrange(frames, "... h w c -> ... c h w"))
