"""Held-out evaluation of a bundle's reward / termination / object heads on real recorded transitions.

The heads turn frames into rewards inside a world-model env, so they are judged on what an agent needs:

* ``heads_reward_auc``: how well ``P(reward != 0)`` ranks rewarded transitions above unrewarded ones (ROC AUC,
  threshold-free; 0.5 is chance). Boxing's punches are 3 % of transitions, so accuracy would say nothing.
* ``heads_reward_mae`` and ``heads_reward_mae_zero``: mean absolute error of the expected reward, and of always
  predicting 0 (the baseline it must beat).
* ``heads_return_error``: mean over episodes of ``|sum of expected rewards - true return|``, next to
  ``heads_return_abs`` (mean ``|true return|``) for scale.
* ``heads_object_error_m`` and ``heads_object_error_mean_m``: mean distance between the predicted and the recorded
  object position, and that of always predicting the training mean.
* ``heads_termination_auc`` when there is a termination head and the data has terminations.

Every transition ``t-1 -> t`` of the first ``episodes`` episodes is scored (row ``t`` holds the reward and flags of
the step into frame ``t``, see :mod:`genie_env.data.collect`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genie_env.data.lerobot import LeRobotDataset
from genie_env.models.heads import WorldHeads
from genie_env.start_states import frames_to_float


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); ``None`` with a single class."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


@torch.no_grad()
def evaluate_heads(
    heads: WorldHeads,
    dataset: LeRobotDataset,
    episodes: int,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Scores ``heads`` on every transition of the first ``episodes`` episodes of ``dataset``.

    Returns:
        The ``heads_*`` metrics of the module docstring (only those the heads and the data allow) and
        ``heads_transitions``.
    """
    cfg = heads.config
    heads = heads.to(device).eval()
    cameras = list(cfg.cameras) or dataset.camera_names[: cfg.num_views]
    zero = int(np.argmin(np.abs(np.asarray(cfg.reward_values)))) if cfg.reward_values else -1  # the "no reward" class
    scores: dict[str, list[np.ndarray]] = {k: [] for k in ("p_event", "mean", "reward", "term_p", "term", "obj")}
    returns: list[tuple[float, float]] = []
    for index in range(min(episodes, dataset.num_episodes)):
        episode = dataset.load_episode(index)
        views = np.stack([episode[f"observation.images.{c}"] for c in cameras], axis=1)  # (T, V, H, W, 3)
        frames = frames_to_float(torch.from_numpy(views))  # (T, V, 3, H, W)
        vectors = {
            name: torch.from_numpy(episode[key]).float() if key and dim else None
            for name, key, dim in (("state", cfg.state_key, cfg.state_dim), ("goal", cfg.goal_key, cfg.goal_dim))
        }
        predicted_return = 0.0
        for start in range(1, len(frames), batch_size):
            rows = slice(start, min(start + batch_size, len(frames)))
            prev = slice(start - 1, rows.stop - 1)
            extra = {k: None if v is None else v[rows].to(device) for k, v in vectors.items()}
            out = heads.predict(frames[prev].to(device), frames[rows].to(device), **extra)
            if "reward_probs" in out:
                scores["p_event"].append((1.0 - out["reward_probs"][:, zero]).cpu().numpy())
                scores["mean"].append(out["reward_mean"].cpu().numpy())
                scores["reward"].append(episode["reward"][rows, 0])
                predicted_return += float(out["reward_mean"].sum())
            if "termination_prob" in out:
                scores["term_p"].append(out["termination_prob"].cpu().numpy())
                scores["term"].append(episode["terminated"][rows, 0])
            if "object" in out and cfg.object_key in episode:
                error = np.linalg.norm(out["object"].cpu().numpy() - episode[cfg.object_key][rows], axis=-1)
                baseline = np.linalg.norm(np.asarray(cfg.object_mean) - episode[cfg.object_key][rows], axis=-1)
                scores["obj"].append(np.stack([error, baseline], axis=1))
        if scores["reward"]:
            returns.append((predicted_return, float(episode["reward"][1:, 0].sum())))
    result: dict[str, Any] = {"heads_transitions": int(sum(len(r) for r in scores["reward"]))}
    if scores["reward"]:
        reward = np.concatenate(scores["reward"]).astype(np.float64)
        mean = np.concatenate(scores["mean"]).astype(np.float64)
        result["heads_reward_auc"] = roc_auc(np.concatenate(scores["p_event"]), reward != 0)
        result["heads_reward_mae"] = float(np.abs(mean - reward).mean())
        result["heads_reward_mae_zero"] = float(np.abs(reward).mean())
        result["heads_return_error"] = float(np.mean([abs(p - t) for p, t in returns]))
        result["heads_return_abs"] = float(np.mean([abs(t) for _, t in returns]))
    if scores["term"]:
        result["heads_termination_auc"] = roc_auc(np.concatenate(scores["term_p"]), np.concatenate(scores["term"]))
    if scores["obj"]:
        errors = np.concatenate(scores["obj"])
        result["heads_object_error_m"] = float(errors[:, 0].mean())
        result["heads_object_error_mean_m"] = float(errors[:, 1].mean())
    return result
