"""Datasets in the LeRobot v2.1 layout: a writer that commits whole episodes atomically, and a reader.

Layout (``chunks_size`` episodes per chunk)::

    meta/info.json                 features (dtype, shape, names, camera intrinsics), fps, totals, paths
    meta/episodes.jsonl            one line per committed episode: index, tasks, length  <- the commit record
    meta/episodes_stats.jsonl      per-episode min / max / mean / std / count of every feature
    meta/tasks.jsonl               task index -> text
    data/chunk-000/episode_000000.parquet                               one row per frame
    videos/chunk-000/observation.images.<camera>/episode_000000.mp4     one video per camera

**Row convention.** Row ``t`` holds the observation *at* frame ``t``, the ``action`` taken *at* frame ``t``
(it leads to frame ``t + 1``), and the ``reward`` / ``terminated`` / ``truncated`` that *arrived with*
frame ``t`` (Gymnasium's step convention; row 0 has reward 0). An episode of ``n`` actions therefore has
``n + 1`` rows; the last row's action is all zeros and is never a transition.

**Atomicity.** An episode's parquet and videos are written under temporary names and renamed into place;
the episode exists only once its line is in ``meta/episodes.jsonl`` (rewritten atomically). An interrupted
writer leaves the episodes committed before it, readable; ``--resume`` continues after them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genie_env.data.errors import DatasetError
from genie_env.data.features import INDEX_FEATURES, Feature
from genie_env.data.video import read_video, write_video

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"dataset file missing: {path}")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DatasetError(f"corrupt JSON lines file {path}: {exc}") from exc


def _stats(values: np.ndarray, is_video: bool) -> dict[str, Any]:
    """LeRobot-style statistics; images per channel in [0, 1] with shape (3, 1, 1)."""
    if is_video:
        x = values.reshape(-1, 3).astype(np.float64) / 255.0
        shape = (3, 1, 1)
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
        shape = values.shape[1:]
    return {
        "min": x.min(0).reshape(shape).tolist(),
        "max": x.max(0).reshape(shape).tolist(),
        "mean": x.mean(0).reshape(shape).tolist(),
        "std": x.std(0).reshape(shape).tolist(),
        "count": [int(len(values))],
    }


def _column(values: np.ndarray, feature: Feature) -> pa.Array:
    """Parquet column: scalars for shape (1,), fixed-size lists (flattened, row-major) otherwise."""
    flat = values.reshape(len(values), -1)
    if feature.size == 1:
        return pa.array(flat[:, 0])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), feature.size)


class LeRobotWriter:
    """Writes episodes into a dataset directory (see the module docstring for the layout).

    Use :meth:`create` for a new dataset and :meth:`open` to append to (resume) an existing one.
    """

    def __init__(self, root: Path, info: dict[str, Any], episodes: list[dict[str, Any]], stats, tasks) -> None:
        self.root = root
        self.info = info
        self.features = {k: Feature.from_json(v) for k, v in info["features"].items() if k not in INDEX_FEATURES}
        self.episodes: list[dict[str, Any]] = episodes
        self.stats: list[dict[str, Any]] = stats
        self.tasks: list[dict[str, Any]] = tasks

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        features: dict[str, Feature],
        fps: float,
        extra_info: dict[str, Any] | None = None,
    ) -> LeRobotWriter:
        """Start an empty dataset at ``root``.

        Raises:
            FileExistsError: if ``root`` exists and is not empty.
        """
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(f"dataset directory {root} already exists and is not empty")
        for name in INDEX_FEATURES:
            if name in features:
                raise ValueError(f"feature name {name!r} is reserved for LeRobot bookkeeping")
        all_features = {k: f.to_json() for k, f in features.items()}
        all_features.update({k: f.to_json() for k, f in INDEX_FEATURES.items()})
        for k, f in features.items():
            if f.is_video:
                all_features[k].setdefault("info", {}).update(
                    {
                        "video.fps": fps,
                        "video.codec": "h264",
                        "video.pix_fmt": "yuv444p",
                        "video.lossless": True,
                        "video.is_depth_map": False,
                        "has_audio": False,
                    }
                )
        info: dict[str, Any] = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "total_videos": 0,
            "total_chunks": 0,
            "chunks_size": CHUNKS_SIZE,
            "fps": fps,
            "splits": {},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": all_features,
        }
        info.update(extra_info or {})
        root.mkdir(parents=True, exist_ok=True)
        writer = cls(root, info, [], [], [])
        writer._write_meta()
        return writer

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> LeRobotWriter:
        """Reopen a dataset to append episodes after the committed ones (``--resume``)."""
        reader = LeRobotDataset(root)
        n = reader.num_episodes
        stats = [s for s in _read_jsonl(reader.root / "meta" / "episodes_stats.jsonl") if s["episode_index"] < n]
        writer = cls(reader.root, reader.info, list(reader.episodes), stats, list(reader.tasks))
        for leftover in reader.root.glob(".staging-*"):  # from a writer killed mid-episode
            shutil.rmtree(leftover, ignore_errors=True)
        writer._write_meta()  # repair totals after an interruption between the commit and info.json
        return writer

    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return len(self.episodes)

    def _task_index(self, task: str) -> int:
        for row in self.tasks:
            if row["task"] == task:
                return int(row["task_index"])
        self.tasks.append({"task_index": len(self.tasks), "task": task})
        return len(self.tasks) - 1

    def add_episode(self, frames: dict[str, np.ndarray], task: str, extra: dict[str, Any] | None = None) -> int:
        """Validate and commit one episode.

        Args:
            frames: feature name -> array of shape (T, *feature.shape), for every feature of the dataset.
            task: the episode's task text (``meta/tasks.jsonl``).
            extra: additional fields for the episode's line in ``meta/episodes.jsonl`` (seed, policy, ...).

        Returns:
            The new episode's index.

        Raises:
            ValueError: for a missing or unexpected feature, a wrong shape, or non-finite values.
        """
        missing = sorted(set(self.features) - set(frames))
        unexpected = sorted(set(frames) - set(self.features))
        if missing or unexpected:
            raise ValueError(f"episode features mismatch: missing {missing}, unexpected {unexpected}")
        lengths = {k: len(v) for k, v in frames.items()}
        length = next(iter(lengths.values()))
        if length < 1 or any(n != length for n in lengths.values()):
            raise ValueError(f"all features must have the same positive number of frames, got {lengths}")
        checked: dict[str, np.ndarray] = {}
        for name, feature in self.features.items():
            arr = np.asarray(frames[name])
            if arr.shape[1:] != feature.shape:
                raise ValueError(f"feature {name!r}: expected frames of shape {feature.shape}, got {arr.shape[1:]}")
            if not feature.is_video and feature.dtype.startswith("float") and not np.all(np.isfinite(arr)):
                raise ValueError(f"feature {name!r} holds non-finite values")
            if feature.is_video and arr.dtype != np.uint8:
                raise ValueError(f"feature {name!r}: expected uint8 images, got {arr.dtype}")
            checked[name] = arr if feature.is_video else arr.astype(feature.dtype)

        index = self.num_episodes
        chunk = index // CHUNKS_SIZE
        task_index = self._task_index(task)
        start = sum(int(e["length"]) for e in self.episodes)
        fps = float(self.info["fps"])
        columns: dict[str, pa.Array] = {}
        for name, feature in self.features.items():
            if not feature.is_video:
                columns[name] = _column(checked[name], feature)
        columns["timestamp"] = pa.array((np.arange(length) / fps).astype(np.float32))
        columns["frame_index"] = pa.array(np.arange(length, dtype=np.int64))
        columns["episode_index"] = pa.array(np.full(length, index, dtype=np.int64))
        columns["index"] = pa.array(np.arange(start, start + length, dtype=np.int64))
        columns["task_index"] = pa.array(np.full(length, task_index, dtype=np.int64))

        # 1. Files under temporary names, then renamed into place (a crash leaves no partial file in place).
        staged: list[tuple[Path, Path]] = []
        tmp_dir = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            data_path = self.root / DATA_PATH.format(episode_chunk=chunk, episode_index=index)
            tmp = tmp_dir / "data.parquet"
            pq.write_table(pa.table(columns), tmp)
            staged.append((tmp, data_path))
            for name, feature in self.features.items():
                if feature.is_video:
                    video_path = self.root / VIDEO_PATH.format(
                        episode_chunk=chunk, video_key=name, episode_index=index
                    )
                    tmp = tmp_dir / f"{name}.mp4"
                    write_video(tmp, checked[name], fps)
                    staged.append((tmp, video_path))
            for tmp, final in staged:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

        # 2. Stats, then the commit record, then the totals.
        self.stats.append(
            {"episode_index": index, "stats": {k: _stats(checked[k], f.is_video) for k, f in self.features.items()}}
        )
        episode = {"episode_index": index, "tasks": [task], "length": length}
        episode.update(extra or {})
        self.episodes.append(episode)
        self._write_meta()
        return index

    def _write_meta(self) -> None:
        meta = self.root / "meta"
        n = self.num_episodes
        n_videos = sum(1 for f in self.features.values() if f.is_video)
        self.info.update(
            total_episodes=n,
            total_frames=sum(int(e["length"]) for e in self.episodes),
            total_tasks=len(self.tasks),
            total_videos=n * n_videos,
            total_chunks=(n + CHUNKS_SIZE - 1) // CHUNKS_SIZE,
            splits={"train": f"0:{n}"} if n else {},
        )
        atomic_write_text(meta / "tasks.jsonl", _jsonl(self.tasks))
        atomic_write_text(meta / "episodes_stats.jsonl", _jsonl(self.stats))
        atomic_write_text(meta / "episodes.jsonl", _jsonl(self.episodes))
        atomic_write_text(meta / "info.json", json.dumps(self.info, indent=2) + "\n")


class LeRobotDataset:
    """Reads a LeRobot v2.1 dataset written by :class:`LeRobotWriter` (or compatible).

    Args:
        root: the dataset directory.

    Raises:
        DatasetError: naming the file, if ``meta/`` is missing or corrupt.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset directory not found: {self.root}")
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"dataset file missing: {info_path} (is {self.root} a LeRobot dataset?)")
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"corrupt dataset file {info_path}: {exc}") from exc
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: codebase_version {version!r}, expected {CODEBASE_VERSION!r}")
        self.features = {k: Feature.from_json(v) for k, v in self.info["features"].items() if k not in INDEX_FEATURES}
        # episodes.jsonl is the commit record: it, not info.json's totals, says which episodes exist.
        self.episodes = _read_jsonl(self.root / "meta" / "episodes.jsonl")
        self.tasks = _read_jsonl(self.root / "meta" / "tasks.jsonl")
        for i, ep in enumerate(self.episodes):
            if ep.get("episode_index") != i:
                raise DatasetError(f"{self.root / 'meta' / 'episodes.jsonl'}: line {i + 1} is not episode {i}")

    @property
    def fps(self) -> float:
        """Frames per second."""
        return float(self.info["fps"])

    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return len(self.episodes)

    @property
    def video_keys(self) -> list[str]:
        """Image features, e.g. ``observation.images.front``."""
        return [k for k, f in self.features.items() if f.is_video]

    @property
    def camera_names(self) -> list[str]:
        """Camera names, in observation order."""
        return [k.removeprefix("observation.images.") for k in self.video_keys]

    def intrinsics(self, camera: str) -> np.ndarray | None:
        """The (3, 3) intrinsics of ``camera`` at the recorded size, or None if the dataset has none."""
        feature = self.features[f"observation.images.{camera}"]
        k = feature.info.get("camera.intrinsics")
        return None if k is None else np.asarray(k, dtype=np.float64)

    def episode_length(self, index: int) -> int:
        """Number of frames (rows) of episode ``index``."""
        return int(self.episodes[self._check_index(index)]["length"])

    def _check_index(self, index: int) -> int:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range: dataset {self.root} has {self.num_episodes} episodes")
        return index

    def data_path(self, index: int) -> Path:
        """Path of episode ``index``'s parquet file."""
        return self.root / self.info["data_path"].format(
            episode_chunk=index // int(self.info["chunks_size"]), episode_index=index
        )

    def video_path(self, index: int, video_key: str) -> Path:
        """Path of episode ``index``'s video for ``video_key``."""
        return self.root / self.info["video_path"].format(
            episode_chunk=index // int(self.info["chunks_size"]), video_key=video_key, episode_index=index
        )

    def load_episode(self, index: int, videos: bool = True) -> dict[str, np.ndarray]:
        """Load one episode.

        Returns:
            feature name -> array of shape (T, *feature.shape) (images uint8 (T, H, W, 3)), plus
            ``frame_index`` and ``timestamp``.

        Raises:
            DatasetError: naming the file, for a missing, corrupt or truncated parquet or video file.
        """
        length = self.episode_length(index)
        path = self.data_path(index)
        if not path.is_file():
            raise DatasetError(f"dataset file missing: {path}")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"corrupt parquet file {path}: {exc}") from exc
        if table.num_rows != length:
            raise DatasetError(f"{path} has {table.num_rows} rows, meta/episodes.jsonl says {length}")
        out: dict[str, np.ndarray] = {}
        for name, feature in self.features.items():
            if feature.is_video:
                if videos:
                    frames = read_video(self.video_path(index, name), expected_frames=length)
                    if frames.shape[1:] != feature.shape:
                        raise DatasetError(
                            f"{self.video_path(index, name)}: frames of shape {frames.shape[1:]}, "
                            f"expected {feature.shape}"
                        )
                    out[name] = frames
                continue
            if name not in table.column_names:
                raise DatasetError(f"{path} has no column {name!r}")
            column = table.column(name).combine_chunks()
            if feature.size == 1:
                values = column.to_numpy(zero_copy_only=False)
            else:
                values = column.flatten().to_numpy(zero_copy_only=False)
            # A copy: arrow buffers are read-only, and users (and torch.from_numpy) expect writable arrays.
            out[name] = np.array(values, dtype=feature.dtype).reshape(length, *feature.shape)
        out["frame_index"] = table.column("frame_index").to_numpy()
        out["timestamp"] = table.column("timestamp").to_numpy()
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.num_episodes):
            yield self.load_episode(i)

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, episodes={self.num_episodes}, "
            f"frames={sum(int(e['length']) for e in self.episodes)}, cameras={self.camera_names}, fps={self.fps:g})"
        )
