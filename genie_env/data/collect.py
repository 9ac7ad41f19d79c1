"""Record a real simulator into a LeRobot-layout dataset: ``genie-env collect``.

Episode ``i`` of a collection with seed ``s`` is fully determined by ``(s, i)``: the simulator's reset seed and
the policy's random generator both derive from ``numpy.random.SeedSequence([s, i])``. So a resumed
collection produces exactly the episodes an uninterrupted one would have.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genie_env.data.lerobot import LeRobotDataset, LeRobotWriter
from genie_env.data.policies import POLICY_NAMES, Policy, make_policy
from genie_env.data.sources import RealSource, make_source


@dataclass
class CollectStats:
    """What a collection run did."""

    episodes: int
    frames: int
    seconds: float
    successes: int

    @property
    def steps_per_second(self) -> float:
        """Recorded simulator steps (with rendering and writing) per wall-clock second."""
        return self.frames / max(self.seconds, 1e-9)


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The simulator reset seed and the policy generator of episode ``index``."""
    env_seq, policy_seq = np.random.SeedSequence([seed, index]).spawn(2)
    return int(env_seq.generate_state(1)[0]), np.random.default_rng(policy_seq)


def record_episode(source: RealSource, policy: Policy, seed: int, index: int) -> tuple[dict[str, np.ndarray], bool]:
    """Play one episode and stack its frames (see :mod:`genie_env.data.lerobot` for the row convention).

    Returns:
        ``(frames, success)``: feature name -> (T, ...) array, and whether the episode ended in success.
    """
    env_seed, rng = episode_seeds(seed, index)
    frame = source.reset(env_seed)
    policy.reset(rng)
    features = source.features
    action_feature = features["action"]
    rows: list[dict[str, np.ndarray]] = []
    reward, terminated, truncated, success = 0.0, False, False, False
    while True:
        row = dict(frame)
        row["reward"] = np.array([reward], np.float32)
        row["terminated"] = np.array([terminated])
        row["truncated"] = np.array([truncated])
        if "is_success" in features:
            row["is_success"] = np.array([success])
        if terminated or truncated:
            row["action"] = np.zeros(action_feature.shape, action_feature.dtype)  # no action after the last frame
            rows.append(row)
            break
        action = np.asarray(policy(frame, rng), dtype=action_feature.dtype).reshape(action_feature.shape)
        row["action"] = action
        rows.append(row)
        result = source.step(action)
        frame, reward, terminated, truncated = result.frame, result.reward, result.terminated, result.truncated
        success = bool(result.info.get("is_success", False))
    return {k: np.stack([r[k] for r in rows]) for k in features}, success


def _prepare_out(out: Path, overwrite: bool, resume: bool) -> bool:
    """Check the output directory; returns True when resuming an existing dataset."""
    if overwrite and resume:
        raise ValueError("--overwrite and --resume are mutually exclusive")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return False
    is_dataset = (out / "meta" / "info.json").is_file()
    if resume:
        if not is_dataset:
            raise FileExistsError(f"cannot --resume: {out} is not a dataset (no meta/info.json)")
        return True
    if overwrite:
        if not is_dataset:
            # Refuse to delete a directory we did not write.
            raise FileExistsError(f"refusing to --overwrite {out}: it is not empty and not a genie-env dataset")
        shutil.rmtree(out)
        return False
    raise FileExistsError(f"output directory {out} already exists and is not empty; pass --overwrite or --resume")


def collect(
    env_id: str,
    episodes: int,
    out: str | Path,
    *,
    seed: int = 0,
    size: int = 64,
    policy: str = "mixed",
    max_steps: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> CollectStats:
    """Record ``episodes`` episodes of ``env_id`` into the dataset directory ``out``.

    Args:
        env_id: a Fetch task (``FetchPush-v4`` ...) or an Atari id (``ALE/Boxing-v5`` ...).
        episodes: total number of episodes the dataset should hold (with ``resume``, the missing ones are added).
        out: dataset directory.
        seed: collection seed; episode ``i`` depends only on ``(seed, i)``.
        size: square image size in pixels.
        policy: ``"scripted"``, ``"random"`` or ``"mixed"`` (see :mod:`genie_env.data.policies`).
        max_steps: cap on the number of actions per episode (default: the simulator's own limit).
        overwrite: replace an existing dataset at ``out``.
        resume: append to the dataset at ``out`` (same env, size, policy and seed required).
        progress: show a progress bar.

    Raises:
        FileExistsError: if ``out`` is a non-empty directory and neither ``overwrite`` nor ``resume`` is set.
        ValueError: for an unknown env id (listing the supported ones), policy, or bad numbers.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if policy not in POLICY_NAMES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICY_NAMES}")
    out = Path(out)
    resuming = _prepare_out(out, overwrite, resume)
    source = make_source(env_id, size, max_steps)  # validates env_id and size before anything is written
    try:
        recipe = {"env_id": env_id, "seed": seed, "size": size, "policy": policy, "max_steps": max_steps}
        if resuming:
            old = LeRobotDataset(out).info.get("genie_env", {}).get("recipe", {})
            if old != recipe:
                raise ValueError(f"cannot --resume {out}: it was collected with {old}, this run asks for {recipe}")
            writer = LeRobotWriter.open(out)
        else:
            metadata = source.metadata()
            extra = {"robot_type": metadata.get("robot_type"), "genie_env": {"recipe": recipe, **metadata}}
            writer = LeRobotWriter.create(out, source.features, source.fps, extra)
        pol = make_policy(policy, env_id, source.action_space)
        start = writer.num_episodes
        frames = successes = 0
        t0 = time.perf_counter()
        bar = tqdm(range(start, episodes), desc=f"collect {env_id}", unit="ep", disable=not progress)
        for index in bar:
            data, success = record_episode(source, pol, seed, index)
            writer.add_episode(data, source.task, {"seed": seed, "policy": pol.mode or policy, "success": success})
            frames += len(data["action"])
            successes += int(success)
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - t0):.0f}")
        return CollectStats(episodes - start, frames, time.perf_counter() - t0, successes)
    finally:
        source.close()
