"""Latent-to-real action mapping for Genie worlds (the Genie paper's Appendix E idea).

A Genie world is driven by ``|A|`` *latent* actions that its latent action model (LAM) discovered without labels.
To let a policy trained in the world act in the real game, we label latent actions with real ones: run the
shipped LAM over labelled real transitions (a LeRobot recording: frame ``t``, real action ``a_t``, frame
``t + 1``), take the latent id ``z_t`` it infers for each, and count the co-occurrence table
``counts[z, a]`` (latent x real).

Decision rules (both are maximum a posteriori choices under add-``alpha`` smoothed counts):

* :attr:`LatentActionMapping.latent_to_real` (acting in reality with a latent policy): for latent ``z`` the real
  action ``argmax_a P(a | z)``, i.e. the real action most often labelled on the transitions the LAM explains with
  ``z``. A latent never seen in the data falls back to the most frequent real action overall (the prior).
* :attr:`LatentActionMapping.real_to_latent` (choosing a latent for a real key in ``genie-env play``): for real
  action ``a`` the latent ``argmax_z P(a | z)`` -- the latent whose transitions are most reliably ``a``. For a fixed
  ``a`` this is the same argmax as the lift ``P(a | z) / P(a) = P(z | a) / P(z)``, so a latent that is merely
  common everywhere (e.g. "nothing moved") is not chosen for every real action, as "most frequent latent among
  ``a``'s transitions" would. Smoothing (``alpha = 1``) keeps a latent seen once from winning on a 1/1 ratio.
  A real action never seen in the data has no latent (``-1``) and is left out of the play file.

Files: :meth:`LatentActionMapping.save` writes the whole mapping (counts, names, rules) as JSON;
:meth:`LatentActionMapping.save_play_mapping` writes the ``{"REAL_ACTION_NAME": latent_id}`` file that
``genie-env play`` reads from a bundle (``latent_mapping.json``, see :mod:`envs.keymap`; Atari spells the fire
button ``FIRE``, which play binds to space).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genie_env.data.lerobot import LeRobotDataset, atomic_write_text
from genie_env.eval.metrics import from_uint8

FORMAT = "genie_env.latent_mapping/v1"
SMOOTHING = 1.0
"""Add-``alpha`` smoothing of the counts in the decision rules (see the module docstring)."""
SCREEN_KEY = "observation.images.screen"


@dataclass
class LatentActionMapping:
    """Co-occurrence counts of latent and real actions, and the mappings derived from them.

    Attributes:
        counts: ``(num_latent, num_real)`` int64, ``counts[z, a]`` transitions with latent ``z`` and real ``a``.
        real_action_names: Name of each real action (Atari ``get_action_meanings()`` spelling), or ``None``.
        alpha: Smoothing used by the decision rules.
    """

    counts: np.ndarray
    real_action_names: list[str] | None = None
    alpha: float = SMOOTHING

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 2 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
            raise ValueError(f"counts must be a non-empty 2-D array of non-negative integers, got {counts!r}")
        self.counts = counts.astype(np.int64)
        if self.real_action_names is not None and len(self.real_action_names) != self.num_real:
            raise ValueError(f"{len(self.real_action_names)} real action names for {self.num_real} real actions")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")

    @property
    def num_latent(self) -> int:
        """Number of latent actions."""
        return int(self.counts.shape[0])

    @property
    def num_real(self) -> int:
        """Number of real actions."""
        return int(self.counts.shape[1])

    @property
    def num_transitions(self) -> int:
        """Transitions counted."""
        return int(self.counts.sum())

    def real_given_latent(self) -> np.ndarray:
        """``(num_latent, num_real)`` smoothed ``P(real | latent)`` (uniform for an unseen latent with alpha > 0)."""
        smoothed = self.counts + self.alpha
        totals = smoothed.sum(1, keepdims=True)
        return np.divide(smoothed, totals, out=np.zeros(smoothed.shape), where=totals > 0)

    @property
    def latent_to_real(self) -> list[int]:
        """For each latent, the most likely real action ``argmax_a P(a | z)`` (the prior's mode if unseen)."""
        prior = int(np.argmax(self.counts.sum(0)))
        return [int(np.argmax(row)) if row.sum() > 0 else prior for row in self.counts]

    @property
    def real_to_latent(self) -> list[int]:
        """For each real action, ``argmax_z P(a | z)`` (max lift); ``-1`` for a real action never seen."""
        posterior = self.real_given_latent()
        seen = self.counts.sum(0) > 0
        return [int(np.argmax(posterior[:, a])) if seen[a] else -1 for a in range(self.num_real)]

    def map_latent(self, latent: Any) -> np.ndarray:
        """Real actions for latent ids (any shape of integers in ``[0, num_latent)``)."""
        ids = np.asarray(latent)
        if not np.issubdtype(ids.dtype, np.integer):
            if not np.all(np.equal(np.mod(ids, 1), 0)):
                raise ValueError(f"latent actions must be integers, got {latent!r}")
            ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_latent):
            raise ValueError(f"latent action out of range [0, {self.num_latent}): {latent!r}")
        return np.asarray(self.latent_to_real, dtype=np.int64)[ids]

    def play_mapping(self) -> dict[str, int]:
        """``{"REAL_ACTION_NAME": latent_id}`` for every real action seen (the ``latent_mapping.json`` form)."""
        if self.real_action_names is None:
            raise ValueError("the mapping has no real action names; fit it on a dataset that records them")
        return {name.upper(): z for name, z in zip(self.real_action_names, self.real_to_latent, strict=True) if z >= 0}

    # -- files ------------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what :meth:`save` writes)."""
        return {
            "format": FORMAT,
            "num_latent": self.num_latent,
            "num_real": self.num_real,
            "num_transitions": self.num_transitions,
            "alpha": self.alpha,
            "real_action_names": self.real_action_names,
            "counts": self.counts.tolist(),
            "latent_to_real": self.latent_to_real,
            "real_to_latent": self.real_to_latent,
            "rules": {
                "latent_to_real": "argmax_a P(a | z), add-alpha smoothed; unseen latent -> most frequent real action",
                "real_to_latent": "argmax_z P(a | z) (= max lift P(a|z)/P(a)), add-alpha smoothed; unseen -> -1",
            },
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temp file + ``os.replace``)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatentActionMapping:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: Naming the file, if it is not a latent action mapping.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return cls(np.asarray(data["counts"], dtype=np.int64), data.get("real_action_names"), data["alpha"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid latent action mapping {path}: {exc}") from exc

    def save_play_mapping(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`play_mapping` atomically; a directory ``path`` (a bundle) gets ``latent_mapping.json``."""
        from envs.keymap import LATENT_MAPPING_FILE

        path = Path(path)
        if path.is_dir():
            path = path / LATENT_MAPPING_FILE
        atomic_write_text(path, json.dumps(self.play_mapping(), indent=2) + "\n")
        return path


def _action_names(dataset: LeRobotDataset, num_real: int) -> list[str] | None:
    names = dataset.info.get("genie_env", {}).get("action_meanings")
    if isinstance(names, list) and len(names) == num_real and all(isinstance(n, str) for n in names):
        return [n.upper() for n in names]
    return None


def infer_episode_latents(world: Any, screen: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Latent ids ``(T - 1,)`` of one episode's uint8 frames ``(T, H, W, 3)``, in chunks that bound memory.

    Each chunk after the first re-reads the LAM's temporal context window before it and drops the actions
    inferred there, so the result equals one pass over the whole episode (the LAM attends to a sliding window).
    """
    import torch

    frames = from_uint8(torch.as_tensor(np.ascontiguousarray(screen)).permute(0, 3, 1, 2))
    total = frames.shape[0]
    if total < 2:
        return np.zeros(0, dtype=np.int64)
    context = int(getattr(getattr(world.lam, "config", None), "context_frames", 16)) + 1
    chunk = max(int(chunk), context + 2)
    out: list[np.ndarray] = []
    start = 0  # first transition not yet inferred
    with torch.no_grad():
        while start < total - 1:
            lo = max(0, start - context)
            hi = min(total, start + chunk)
            ids = world.infer_actions(frames[None, lo:hi].to(world.device))[0].cpu().numpy()
            out.append(ids[start - lo :])
            start = hi - 1
    return np.concatenate(out).astype(np.int64)


def fit_latent_mapping(
    world: Any,
    dataset: LeRobotDataset | str | os.PathLike[str],
    episodes: int | None = None,
    max_transitions: int | None = None,
) -> LatentActionMapping:
    """Count latent x real actions over a recording's transitions.

    Args:
        world: A :class:`~genie_env.models.genie.world.GenieWorldModel` (its LAM labels the transitions).
        dataset: A LeRobot recording with ``observation.images.screen`` and integer ``action`` (or its path).
        episodes: Use the first ``episodes`` episodes (default all).
        max_transitions: Stop after this many transitions (default no limit).

    Raises:
        ValueError: If the recording has no screen or no discrete actions, or yields no transition.
    """
    ds = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
    feature = ds.info.get("features", {}).get("action", {})
    num_real = (feature.get("info") or {}).get("n") if isinstance(feature, dict) else None
    if num_real is None:
        num_real = feature.get("n") if isinstance(feature, dict) else None
    if SCREEN_KEY not in ds.video_keys:
        raise ValueError(f"{ds.root} has no {SCREEN_KEY}; the latent mapping needs a Genie (Atari) recording")
    count = ds.num_episodes if episodes is None else min(int(episodes), ds.num_episodes)
    if count < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    num_latent = int(world.lam.config.num_actions)
    pairs_z: list[np.ndarray] = []
    pairs_a: list[np.ndarray] = []
    budget = np.inf if max_transitions is None else int(max_transitions)
    for index in range(count):
        if budget <= 0:
            break
        ep = ds.load_episode(index)
        screen, actions = ep[SCREEN_KEY], np.asarray(ep["action"]).reshape(len(ep[SCREEN_KEY]), -1)
        if actions.shape[1] != 1 or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"{ds.root}: action must be one integer per row, got {actions.dtype} {actions.shape}")
        n = int(min(len(screen) - 1, budget))
        if n <= 0:
            continue
        pairs_z.append(infer_episode_latents(world, screen[: n + 1]))
        pairs_a.append(actions[:n, 0].astype(np.int64))  # row t's action leads frame t -> t + 1
        budget -= n
    if not pairs_z:
        raise ValueError(f"{ds.root}: no transitions in the first {count} episodes")
    z, a = np.concatenate(pairs_z), np.concatenate(pairs_a)
    if num_real is None:
        num_real = int(a.max()) + 1
    counts = np.zeros((num_latent, int(num_real)), dtype=np.int64)
    np.add.at(counts, (z, a), 1)
    return LatentActionMapping(counts, _action_names(ds, int(num_real)))
