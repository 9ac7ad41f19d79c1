"""The ``heads`` component: reward / termination / object-position heads (:class:`~genie_env.models.heads.WorldHeads`).

Alignment. Row ``t`` of a recording holds observation ``t`` and the ``reward`` / ``terminated`` that arrived with
it, produced by the transition ``t - 1 -> t`` (row 0: reward 0, not terminated; see
:func:`genie_env.data.collect.record_episode`). A training sample is therefore the pair of rows ``(t - 1, t)`` for
``t >= 1``: the views at ``t - 1`` and ``t``, the state and goal at ``t``, and the targets ``reward[t]``,
``terminated[t]`` and ``observation.object[t]`` (:class:`TransitionDataset`).

What the data decides. :func:`heads_spec` reads the training episodes' parquet columns (never the videos) and
returns the :class:`WorldHeads` config: cameras and image size, which inputs (state, goal) and targets (reward,
termination, object) exist, the distinct reward values with their counts, the termination rate and the
normalisation statistics. The engine builds a component from its config alone and the dataset afterwards, so
:meth:`HeadsComponent.build_dataset` completes the component the engine has just built with the same config
object (:meth:`HeadsComponent.setup`); outside the engine, pass ``spec=heads_spec(...)`` to the constructor.

Losses: cross-entropy over the reward values, BCE on termination, MSE on normalised object positions. Rare rewards
(Boxing's punches, 3% of transitions) are oversampled (``reward_balance``: a transition of a reward value seen
``n_k`` times appears ``round((n_max / n_k) ** reward_balance)`` times per epoch) and terminations weighted
(``pos_weight = sqrt(negatives / positives)``); the training logits get ``+ log(repeats)`` / ``+ log(pos_weight)``
(logit adjustment), so the model's own probabilities stay calibrated to the recorded frequencies, which is what an
expected reward in imagination needs. Logs include the batch reward accuracy and, per reward value, a running recall
of the calibrated argmax (decay 0.98 per step).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange

from genie_env.data.errors import DatasetError
from genie_env.data.lerobot import LeRobotDataset
from genie_env.data.windows import WindowConfig, WindowDataset
from genie_env.eval.metrics import from_uint8
from genie_env.models.heads import WorldHeads
from training.components.base import Batch, Component, Logs
from training.config import DataConfig, HeadsConfig

STATE_KEY = "observation.state"
OBJECT_KEY = "observation.object"
GOAL_KEYS = ("observation.goal", "observation.desired_goal")
RECALL_DECAY = 0.98


# --- data ------------------------------------------------------------------------------------------------


class TransitionDataset(WindowDataset):
    """Consecutive row pairs ``(t - 1, t)`` of a LeRobot recording, ``t >= 1``, never across episodes.

    Args:
        dataset: a :class:`LeRobotDataset` or its directory.
        state_key: state feature (at ``t``), or ``None``.
        goal_key: goal feature (at ``t``), or ``None``.
        object_key: object-position feature (the target at ``t``), or ``None``.
        episodes, cameras, seed, cache_episodes: as :class:`~genie_env.data.windows.WindowDataset`.
        reward_repeats: reward value -> times each transition with that reward appears per epoch (oversampling of
            rare rewards, :func:`reward_repeats`); default: once each.

    Each item (``V`` cameras):

    ================  ==================  ===================================================
    ``prev_frames``   (V, 3, H, W)        float32 in [-1, 1], the views at ``t - 1``
    ``frames``        (V, 3, H, W)        float32 in [-1, 1], the views at ``t``
    ``reward``        () float32          reward of the transition ``t - 1 -> t`` (row ``t``)
    ``terminated``    () bool             row ``t``
    ``state``         (S,) float32        row ``t``, if ``state_key``
    ``goal``          (G,) float32        row ``t``, if ``goal_key``
    ``object``        (O,) float32        row ``t``, if ``object_key``
    ``frame_index``   () int64            ``t``
    ``episode_index`` () int64
    ================  ==================  ===================================================
    """

    def __init__(
        self,
        dataset: LeRobotDataset | str,
        *,
        state_key: str | None = None,
        goal_key: str | None = None,
        object_key: str | None = None,
        episodes: Sequence[int] | None = None,
        cameras: Sequence[str] | None = None,
        seed: int = 0,
        cache_episodes: int = 64,
        reward_repeats: Mapping[float, int] | None = None,
    ) -> None:
        super().__init__(
            dataset,
            WindowConfig(n_memory=0, n_future=2, memory_mode="contiguous"),
            episodes=episodes,
            cameras=cameras,
            seed=seed,
            cache_episodes=cache_episodes,
        )
        self.keys = {"state": state_key, "goal": goal_key, "object": object_key}
        for key in self.keys.values():
            if key is not None and key not in self.dataset.features:
                raise ValueError(f"{self.dataset.root} has no feature {key!r}")
        if reward_repeats:
            # Anchor s is the pair (s, s + 1): its reward is row s + 1's. Repeat it as its reward value asks.
            rewards = {e: _read_columns(self.dataset, e, ["reward"])["reward"][:, 0] for e in self.episodes}
            values = np.array(sorted(reward_repeats), dtype=np.float64)
            table = np.array([reward_repeats[v] for v in sorted(reward_repeats)], dtype=np.int64)
            reward = np.array([rewards[int(e)][int(s) + 1] for e, s in self._anchors], dtype=np.float64)
            nearest = np.abs(reward[:, None] - values[None]).argmin(axis=1)
            self._anchors = np.repeat(self._anchors, table[nearest], axis=0)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        episode, idx, _ = self.window_indices(item)  # idx = [t - 1, t]
        data = self._episode(episode)
        t = int(idx[1])
        views = np.stack([data[f"observation.images.{c}"][idx] for c in self.cameras])  # (V, 2, H, W, 3)
        pair = from_uint8(torch.from_numpy(rearrange(views, "v t h w c -> t v c h w").copy()))
        out: dict[str, torch.Tensor] = {
            "prev_frames": pair[0],
            "frames": pair[1],
            "reward": torch.tensor(float(data["reward"][t, 0]), dtype=torch.float32),
            "terminated": torch.tensor(bool(data["terminated"][t, 0])),
            "frame_index": torch.tensor(t),
            "episode_index": torch.tensor(episode),
        }
        for name, key in self.keys.items():
            if key is not None:
                out[name] = torch.from_numpy(np.asarray(data[key][t], dtype=np.float32).copy())
        return out


def _read_columns(dataset: LeRobotDataset, episode: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Parquet columns of one episode (no video decoding), each ``(T, *feature.shape)``."""
    path = dataset.data_path(episode)
    try:
        table = pq.read_table(path, columns=list(names))
    except Exception as exc:  # missing file, corrupt file, missing column
        raise DatasetError(f"cannot read columns {list(names)} of {path}: {exc}") from exc
    out = {}
    for name in names:
        feature = dataset.features[name]
        column = table.column(name).combine_chunks()
        values = column.to_numpy(zero_copy_only=False) if feature.size == 1 else column.flatten().to_numpy()
        out[name] = np.asarray(values, dtype=feature.dtype).reshape(table.num_rows, *feature.shape)
    return out


def _mean_std(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-entry mean and standard deviation (a constant entry gets std 1)."""
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    return [float(v) for v in mean], [float(v) for v in std]


def heads_spec(
    dataset: LeRobotDataset | str,
    config: HeadsConfig,
    *,
    episodes: Sequence[int] | None = None,
    cameras: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The :class:`WorldHeads` config for training on ``dataset`` (its parquet columns only; fast).

    Statistics are taken over the training samples, rows ``t >= 1`` of ``episodes`` (default: all).

    Raises:
        ValueError: For images that are not square, a ``goal_key`` the data lacks, a termination head asked for
            without a ``terminated`` column, no transitions, or no target at all.
    """
    data = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
    features = data.features
    cams = list(cameras) if cameras is not None else data.camera_names
    unknown = [c for c in cams if c not in data.camera_names]
    if unknown or not cams:
        raise ValueError(f"unknown cameras {unknown or cams}; {data.root} has {data.camera_names}")
    shapes = {tuple(features[f"observation.images.{c}"].shape) for c in cams}
    if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
        raise ValueError(f"heads need square images of one size in every camera, got {sorted(shapes)}")
    image_size = next(iter(shapes))[0]

    state_key = STATE_KEY if config.use_state and STATE_KEY in features else ""
    if config.goal_key.lower() in ("", "none"):
        goal_key = ""
    elif config.goal_key == "auto":
        goal_key = next((k for k in GOAL_KEYS if k in features), "")
    elif config.goal_key in features:
        goal_key = config.goal_key
    else:
        raise ValueError(f"component.goal_key={config.goal_key!r}: {data.root} has no such feature")
    object_key = OBJECT_KEY if config.predict_object and OBJECT_KEY in features else ""
    has_reward, has_terminated = "reward" in features, "terminated" in features
    if config.termination and not has_terminated:
        raise ValueError(f"component.termination=true but {data.root} has no 'terminated' column")

    names = [k for k in (state_key, goal_key, object_key) if k]
    names += [k for k, ok in (("reward", has_reward), ("terminated", has_terminated)) if ok]
    columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for e in list(range(data.num_episodes)) if episodes is None else [int(e) for e in episodes]:
        data.episode_length(e)  # IndexError for an episode that does not exist
        for k, v in _read_columns(data, e, names).items():
            columns[k].append(v[1:])  # samples are rows t >= 1
    cat = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in columns.items()}
    n = len(cat[names[0]]) if names else 0
    if n == 0:
        raise ValueError(f"no transitions in {data.root} (episodes {episodes}): need episodes of >= 2 rows")

    spec: dict[str, Any] = {
        "num_views": len(cams),
        "image_size": int(image_size),
        "cameras": cams,
        "channels": [int(c) for c in config.channels],
        "hidden": int(config.hidden),
        "state_key": state_key,
        "goal_key": goal_key,
        "object_key": object_key,
    }
    for name, key in (("state", state_key), ("goal", goal_key), ("object", object_key)):
        dim = int(features[key].size) if key else 0
        spec[f"{name}_dim"] = dim
        if key:
            spec[f"{name}_mean"], spec[f"{name}_std"] = _mean_std(cat[key].reshape(n, dim))
    if has_reward:
        values, counts = np.unique(cat["reward"].reshape(-1).astype(np.float64), return_counts=True)
        spec["reward_values"] = [float(v) + 0.0 for v in values]  # + 0.0: -0.0 -> 0.0
        spec["reward_counts"] = [int(c) for c in counts]
    if has_terminated:
        positives = int(cat["terminated"].sum())
        spec["termination"] = bool(positives > 0) if config.termination is None else bool(config.termination)
        spec["termination_rate"] = positives / n
    if not (spec.get("reward_values") or spec.get("termination") or spec["object_dim"]):
        raise ValueError(f"{data.root} gives no target: no reward, terminated or {OBJECT_KEY} column")
    return spec


def reward_repeats(counts: Sequence[int], balance: float) -> list[int]:
    """Times per epoch a transition of each reward value appears: ``round((n_max / n_k) ** balance)``, >= 1."""
    n_max = max([int(c) for c in counts], default=1)
    return [max(1, round((n_max / max(int(c), 1)) ** balance)) for c in counts]


# --- the component ---------------------------------------------------------------------------------------


class HeadsComponent(Component):
    """Reward / termination / object-position heads trained on transitions ``(t - 1, t)`` (module docstring).

    Args:
        config: The component config.
        spec: :class:`WorldHeads` config (:func:`heads_spec`); without it the model is built by
            :meth:`build_dataset` called with this same ``config`` object (what the engine does).
        seed: Seed of the initial weights when ``spec`` is given.
    """

    config_class = HeadsConfig
    description = "reward / termination / object-position heads on transitions (frames t-1, t)"

    def __init__(self, config: HeadsConfig, spec: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(config)
        self.heads: WorldHeads | None = None
        self._recall_hits: list[float] = []
        self._recall_count: list[float] = []
        if spec is not None:
            self.setup(spec, seed)

    def setup(self, spec: Mapping[str, Any], seed: int = 0) -> None:
        """Builds the heads from ``spec`` with initial weights drawn from ``seed`` (global RNG untouched)."""
        if self.heads is not None:
            raise RuntimeError("the heads are already built")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.heads = WorldHeads(**spec)
        cfg = self.heads.config
        # Training logits = calibrated logits + log(oversampling of the class) (logit adjustment), so softmax of
        # the model's own logits estimates the recorded frequencies.
        repeats = reward_repeats(cfg.reward_counts or [1] * len(cfg.reward_values), self.config.reward_balance)
        self.register_buffer("reward_logit_offset", torch.tensor(repeats).float().log(), persistent=False)
        rate = float(cfg.termination_rate)
        pos_weight = math.sqrt((1.0 - rate) / rate) if 0.0 < rate < 1.0 else 1.0
        self.register_buffer("termination_pos_weight", torch.tensor([pos_weight]), persistent=False)
        self._recall_hits = [0.0] * len(cfg.reward_values)
        self._recall_count = [0.0] * len(cfg.reward_values)

    @classmethod
    def build_dataset(cls, config: HeadsConfig, data: DataConfig, seed: int) -> TransitionDataset:
        """Transitions of ``data.path``, carrying the measured statistics (``spec``) for :meth:`attach_data`."""
        if not data.path:
            raise ValueError("no training data: set data.path (genie-env train ... --data DIR)")
        recording = LeRobotDataset(data.path)
        spec = heads_spec(recording, config, episodes=data.episodes, cameras=data.cameras)
        values = spec.get("reward_values", [])
        dataset = TransitionDataset(
            recording,
            state_key=spec["state_key"] or None,
            goal_key=spec["goal_key"] or None,
            object_key=spec["object_key"] or None,
            episodes=data.episodes,
            cameras=spec["cameras"],
            seed=seed,
            cache_episodes=data.cache_episodes,
            reward_repeats=dict(
                zip(values, reward_repeats(spec.get("reward_counts", []), config.reward_balance), strict=True)
            ),
        )
        if len(dataset.episodes) > data.cache_episodes:
            warnings.warn(
                f"{len(dataset.episodes)} training episodes but data.cache_episodes={data.cache_episodes}: most items "
                f"will decode videos again (several times slower); set data.cache_episodes={len(dataset.episodes)}",
                stacklevel=2,
            )
        dataset.spec = spec
        dataset.seed = seed
        return dataset

    def attach_data(self, dataset: torch.utils.data.Dataset) -> None:
        """Builds the heads from the statistics :meth:`build_dataset` measured (unless built from a spec)."""
        if self.heads is None:
            self.setup(dataset.spec, dataset.seed)  # type: ignore[attr-defined]

    def _model(self) -> WorldHeads:
        if self.heads is None:
            raise RuntimeError(
                "HeadsComponent has no model yet: pass spec=heads_spec(...) or call "
                "HeadsComponent.build_dataset(config, data, seed) with this component's config"
            )
        return self.heads

    def models(self) -> dict[str, ModelMixin]:
        return {"heads": self._model()}

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        heads, cfg = self._model(), self.config
        mcfg = heads.config
        out = heads(
            batch["prev_frames"].float(),
            batch["frames"].float(),
            batch["state"].float() if mcfg.state_dim else None,
            batch["goal"].float() if mcfg.goal_dim else None,
        )
        loss = batch["frames"].new_zeros((), dtype=torch.float32)
        logs: Logs = {}

        if out.reward_logits is not None:
            target = heads.reward_class(batch["reward"])
            reward_loss = F.cross_entropy(out.reward_logits.float() + self.reward_logit_offset, target)
            loss = loss + cfg.reward_loss_weight * reward_loss
            pred = out.reward_logits.argmax(dim=-1)
            logs["train/reward_loss"] = reward_loss.item()
            logs["train/reward_acc"] = (pred == target).float().mean().item()
            logs.update(self._update_recall(pred, target, mcfg.reward_values))

        if out.termination_logits is not None:
            done = batch["terminated"].float()
            term_loss = F.binary_cross_entropy_with_logits(
                out.termination_logits.float() + self.termination_pos_weight.log(),
                done,
                pos_weight=self.termination_pos_weight,
            )
            loss = loss + cfg.termination_loss_weight * term_loss
            logs["train/termination_loss"] = term_loss.item()
            logs["train/termination_acc"] = ((out.termination_logits > 0).float() == done).float().mean().item()

        if out.object is not None:
            target_obj = batch["object"].float()
            obj_loss = F.mse_loss(out.object.float(), heads.normalize_object(target_obj))
            loss = loss + cfg.object_loss_weight * obj_loss
            error = (heads.denormalize_object(out.object.detach().float()) - target_obj).norm(dim=-1).mean()
            logs["train/object_loss"] = obj_loss.item()
            logs["train/object_error_m"] = error.item()

        logs["train/loss"] = loss.item()
        return loss, logs

    @torch.no_grad()
    def _update_recall(self, pred: torch.Tensor, target: torch.Tensor, values: Sequence[float]) -> Logs:
        """Running per-reward-value recall (``nan`` until the value has been seen) and its mean over values."""
        k = len(values)
        count = torch.bincount(target, minlength=k).tolist()
        hits = torch.bincount(target[pred == target], minlength=k).tolist()
        logs: Logs = {}
        recalls = []
        for i, value in enumerate(values):
            self._recall_hits[i] = RECALL_DECAY * self._recall_hits[i] + hits[i]
            self._recall_count[i] = RECALL_DECAY * self._recall_count[i] + count[i]
            recall = self._recall_hits[i] / self._recall_count[i] if self._recall_count[i] > 0 else float("nan")
            logs[f"train/reward_recall/{value:g}"] = recall
            if not math.isnan(recall):
                recalls.append(recall)
        logs["train/reward_balanced_acc"] = sum(recalls) / len(recalls) if recalls else float("nan")
        return logs
