"""Training windows: sparse memory frames from the past plus a contiguous future chunk, as torch tensors.

A window is anchored at a *future start* ``s`` inside one episode (windows never cross episodes):

* future frames ``s .. s + n_future - 1`` (contiguous);
* ``n_memory`` memory frames chosen from ``[lo, s - 1]`` (``lo = 0``, or ``s - 1 - max_memory_span``), always
  including the newest one, ``s - 1``:

  - ``"uniform"``: evenly spaced (``linspace(lo, s - 1, n_memory)`` rounded), as GE-Sim's rollout does;
  - ``"random"``: ``s - 1`` plus sorted random frames from ``[lo, s - 2]``, as GE-Sim's training does;
  - ``"contiguous"``: ``s - n_memory .. s - 1`` (Genie-style clips of ``n_memory + n_future`` frames).

  When the past is shorter than ``n_memory`` frames (early windows), frames repeat, as in GE-Sim's first chunk.

  With ``max_future_gap = G > 1`` the newest memory frame is ``s - g`` instead, ``g`` drawn uniformly from
  ``1 .. min(G, s)`` per window, and memory is chosen from before it: the future is then up to ``G`` frames away
  from anything the memory shows, so a world model has to take the robot's motion from its conditioning (the
  trajectory maps at the future frames) instead of extrapolating the memory.

Every per-frame quantity is returned at the selected frame indices (memory first, then future), so they stay
aligned: ``actions[k]`` is the action taken *at* frame ``frame_index[k]`` (it leads to ``frame_index[k] + 1``).
Within the contiguous part of a window, ``actions[k]`` is therefore exactly the transition ``k -> k + 1``.

Windows are reproducible: item ``i`` is drawn from ``numpy.random.default_rng([seed, epoch, i])``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange

from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.metrics import from_uint8

MemoryMode = Literal["uniform", "random", "contiguous"]


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut.

    Attributes:
        n_memory: memory frames per window (0 for future-only clips).
        n_future: contiguous future frames per window.
        memory_mode: ``"uniform"``, ``"random"`` or ``"contiguous"`` (see the module docstring).
        max_memory_span: how many frames back memory may reach (None: to the episode start).
        stride: distance between consecutive window anchors in an episode.
        normalize: return frames as float32 in [-1, 1] (else uint8 in [0, 255]).
        max_future_gap: largest distance from the newest memory frame to the future start (1: adjacent).
    """

    n_memory: int = 4
    n_future: int = 1
    memory_mode: MemoryMode = "uniform"
    max_memory_span: int | None = None
    stride: int = 1
    normalize: bool = True
    max_future_gap: int = 1

    def __post_init__(self) -> None:
        if self.n_memory < 0 or self.n_future < 1:
            raise ValueError(f"need n_memory >= 0 and n_future >= 1, got {self.n_memory}, {self.n_future}")
        if self.memory_mode not in ("uniform", "random", "contiguous"):
            raise ValueError(f"memory_mode must be uniform, random or contiguous, got {self.memory_mode!r}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.max_future_gap < 1:
            raise ValueError(f"max_future_gap must be >= 1, got {self.max_future_gap}")
        if self.max_future_gap > 1 and self.n_memory == 0:
            raise ValueError(f"max_future_gap {self.max_future_gap} needs memory frames, got n_memory=0")
        if self.max_memory_span is not None and self.max_memory_span < 0:
            raise ValueError(f"max_memory_span must be >= 0, got {self.max_memory_span}")


def select_memory(s: int, config: WindowConfig, rng: np.random.Generator) -> np.ndarray:
    """Memory frame indices (sorted, newest ``s - 1`` last) for a window whose future starts at ``s``."""
    m = config.n_memory
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    newest = s - 1
    if newest < 0:
        raise ValueError(f"a window with memory needs a future start s >= 1, got {s}")
    lo = 0 if config.max_memory_span is None else max(0, newest - config.max_memory_span)
    if config.memory_mode == "contiguous":
        idx = np.arange(newest - m + 1, newest + 1)
        return np.maximum(idx, lo)
    if config.memory_mode == "uniform":
        return np.round(np.linspace(lo, newest, m)).astype(np.int64)
    pool = np.arange(lo, newest)
    if m == 1:
        return np.array([newest], dtype=np.int64)
    if len(pool) == 0:
        others = np.full(m - 1, newest)
    else:
        others = rng.choice(pool, size=m - 1, replace=len(pool) < m - 1)
    return np.sort(np.append(others, newest)).astype(np.int64)


class WindowDataset(torch.utils.data.Dataset):
    """Windows over a LeRobot dataset for training world models.

    Args:
        dataset: a :class:`LeRobotDataset` or its directory.
        config: how windows are cut.
        episodes: which episodes to use (default: all), e.g. a train or held-out split.
        cameras: which cameras, in order (default: all).
        seed: seed of the random memory choice.
        cache_episodes: decoded episodes kept in memory (videos are decoded once per cached episode).

    Each item is a dict of tensors (``V`` cameras, ``T = n_memory + n_future`` frames):

    ================  ==================  ========================================================
    ``frames``        (V, T, 3, H, W)     float32 in [-1, 1] (or uint8 if not ``normalize``)
    ``frame_index``   (T,) int64          frame indices in the episode, memory first
    ``is_memory``     (T,) bool           True for memory frames
    ``actions``       (T, A)              the action taken at each frame (float32, or int64 for Atari)
    ``state``         (T, S) float32      if the dataset has ``observation.state``
    ``extrinsics``    (V, T, 4, 4)        camera-to-base, OpenCV (Fetch)
    ``intrinsics``    (V, 3, 3)           (Fetch)
    ``reward``        (T,) float32        reward that arrived with each frame
    ``terminated``    (T,) bool
    ``episode_index`` () int64
    ================  ==================  ========================================================
    """

    def __init__(
        self,
        dataset: LeRobotDataset | str | Path,
        config: WindowConfig | None = None,
        *,
        episodes: Sequence[int] | None = None,
        cameras: Sequence[str] | None = None,
        seed: int = 0,
        cache_episodes: int = 256,
    ) -> None:
        self.dataset = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
        self.config = config or WindowConfig()
        self.seed = seed
        self.epoch = 0
        all_cameras = self.dataset.camera_names
        self.cameras = list(cameras) if cameras is not None else all_cameras
        unknown = [c for c in self.cameras if c not in all_cameras]
        if unknown or not self.cameras:
            raise ValueError(f"unknown cameras {unknown or self.cameras}; the dataset has {all_cameras}")
        self.episodes = list(range(self.dataset.num_episodes)) if episodes is None else [int(e) for e in episodes]
        for e in self.episodes:
            self.dataset.episode_length(e)  # raises IndexError for an episode that does not exist
        cfg = self.config
        first = cfg.n_memory if cfg.memory_mode == "contiguous" else min(cfg.n_memory, 1)
        anchors = []
        for e in self.episodes:
            last = self.dataset.episode_length(e) - cfg.n_future
            anchors += [(e, s) for s in range(first, last + 1, cfg.stride)]
        if not anchors:
            raise ValueError(
                f"no window of {cfg.n_memory} memory + {cfg.n_future} future frames fits in episodes {self.episodes}"
            )
        self._anchors = np.array(anchors, dtype=np.int64)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = max(1, cache_episodes)
        intr = [self.dataset.intrinsics(c) for c in self.cameras]
        self._intrinsics = None if any(k is None for k in intr) else torch.tensor(np.stack(intr), dtype=torch.float32)

    def set_epoch(self, epoch: int) -> None:
        """Change the random memory choice between epochs (windows stay reproducible per (seed, epoch))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._anchors)

    def _episode(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        data = self.dataset.load_episode(index)
        self._cache[index] = data
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return data

    def window_indices(self, item: int) -> tuple[int, np.ndarray, int]:
        """``(episode, frame indices, n_memory)`` of window ``item`` (memory first, then future)."""
        if not 0 <= item < len(self):
            raise IndexError(f"window {item} out of range [0, {len(self)})")
        episode, s = (int(v) for v in self._anchors[item])
        rng = np.random.default_rng([self.seed, self.epoch, item])
        # Drawn only when asked for, so windows without a gap keep their random memory choice.
        gap = int(rng.integers(1, min(self.config.max_future_gap, s) + 1)) if self.config.max_future_gap > 1 else 1
        memory = select_memory(s - gap + 1, self.config, rng)
        future = np.arange(s, s + self.config.n_future)
        return episode, np.concatenate([memory, future]).astype(np.int64), len(memory)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        episode, idx, n_memory = self.window_indices(item)
        data = self._episode(episode)
        frames = np.stack([data[f"observation.images.{c}"][idx] for c in self.cameras])  # (V, T, H, W, 3)
        frames_t = torch.from_numpy(rearrange(frames, "v t h w c -> v t c h w").copy())
        if self.config.normalize:
            frames_t = from_uint8(frames_t)
        actions = data["action"][idx]
        out: dict[str, torch.Tensor] = {
            "frames": frames_t,
            "frame_index": torch.from_numpy(idx),
            "is_memory": torch.arange(len(idx)) < n_memory,
            "actions": torch.from_numpy(actions.copy()),
            "reward": torch.from_numpy(data["reward"][idx, 0].copy()),
            "terminated": torch.from_numpy(data["terminated"][idx, 0].copy()),
            "episode_index": torch.tensor(episode),
        }
        if "observation.state" in data:
            out["state"] = torch.from_numpy(data["observation.state"][idx].copy())
        ext_keys = [f"observation.cameras.{c}.extrinsics" for c in self.cameras]
        if all(k in data for k in ext_keys):
            out["extrinsics"] = torch.from_numpy(np.stack([data[k][idx] for k in ext_keys]))
        if self._intrinsics is not None:
            out["intrinsics"] = self._intrinsics.clone()
        return out
