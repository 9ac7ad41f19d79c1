"""Held-out evaluation of world-model bundles (``genie-env eval``).

:func:`evaluate` reads the bundle's ``world_model.json``, picks the evaluator registered for its ``"type"`` in
:data:`EVALUATORS`, runs it and writes the result as JSON. Evaluators are named as ``"module:function"`` strings
and imported only when used, so adding a world model is one line here and costs nothing to the others::

    EVALUATORS["gesim"] = "genie_env.eval.gesim:evaluate_gesim"

An evaluator is called as ``fn(bundle_dir, data_dir, episodes, *, png, seed, device, progress, **options)`` and
returns a JSON-serialisable dict of metrics and settings.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genie_env.data.lerobot import LeRobotDataset, atomic_write_text
from genie_env.models.bundle import read_bundle_info
from genie_env.models.heads import load_bundle_heads

EVALUATORS: dict[str, str] = {
    "genie": "genie_env.eval.genie:evaluate_genie",
    "gesim": "genie_env.eval.gesim:evaluate_gesim",
}
"""World-model type (``world_model.json``'s ``"type"``) -> ``"module:function"`` of its evaluator."""

# Result keys that describe how the evaluation ran rather than how well the model did (left out of the table).
SETTING_KEYS = frozenset(
    {
        "type",
        "bundle",
        "dataset",
        "camera",
        "cameras",
        "schedule",
        "chunk",
        "episodes",
        "windows",
        "windows_per_episode",
        "window_starts",
        "prompt_frames",
        "horizon",
        "steps",
        "temperature",
        "seed",
        "device",
        "batch_size",
        "png",
        "genie_env_version",
        "seconds",
        "heads_transitions",
    }
)


def get_evaluator(world_model_type: str) -> Callable[..., dict[str, Any]]:
    """The evaluator registered for a world-model type.

    Raises:
        ValueError: Naming the type and the known ones, if none is registered.
    """
    target = EVALUATORS.get(world_model_type)
    if target is None:
        raise ValueError(f"no evaluator for world-model type {world_model_type!r}; known types: {sorted(EVALUATORS)}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def write_json(path: str | os.PathLike[str], result: dict[str, Any]) -> None:
    """Writes ``result`` as indented JSON atomically (strict JSON: a NaN or inf raises instead of being written)."""
    atomic_write_text(Path(path), json.dumps(result, indent=2, allow_nan=False) + "\n")


def evaluate(
    bundle_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    episodes: int,
    *,
    json_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluates any registered world model, dispatching on its bundle's ``"type"``.

    Args:
        bundle_dir: World-model bundle directory.
        data_dir: Held-out LeRobot dataset.
        episodes: Number of episodes to use (the first ones).
        json_path: Where to write the result (atomically), if given.
        **options: Passed to the evaluator (``png``, ``seed``, ``device``, ``progress``, ``steps``, ...).

    Returns:
        The evaluator's result dict, plus the ``heads_*`` metrics of :mod:`genie_env.eval.heads` when the bundle
        ships reward/termination/object heads.

    Raises:
        CheckpointError: If ``bundle_dir`` has no readable ``world_model.json``.
        ValueError: If no evaluator is registered for its type, or the evaluator rejects a setting.
    """
    info = read_bundle_info(bundle_dir)
    result = get_evaluator(info["type"])(bundle_dir, data_dir, episodes, **options)
    heads = load_bundle_heads(bundle_dir)
    if heads is not None:  # the learned rewards an env built on this bundle hands out, on the same episodes
        from genie_env.eval.heads import evaluate_heads

        result.update(evaluate_heads(heads, LeRobotDataset(data_dir), episodes, device=options.get("device", "cpu")))
    if json_path is not None:
        write_json(json_path, result)
    return result


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(result: dict[str, Any]) -> str:
    """A compact text table of an evaluation result: settings on one line, scalar metrics, per-horizon metrics."""
    lines = [
        f"{result.get('type', '?')} | {result.get('bundle', '?')} on {result.get('dataset', '?')} | "
        f"{result.get('episodes', '?')} episodes, {result.get('windows', '?')} windows | "
        f"prompt {result.get('prompt_frames', '?')}, horizon {result.get('horizon', '?')}, "
        f"steps {result.get('steps', '?')}, temperature {result.get('temperature', '?')}, "
        f"seed {result.get('seed', '?')} | {_fmt(result.get('seconds'))} s"
    ]
    scalars = {
        k: v
        for k, v in result.items()
        if k not in SETTING_KEYS and (v is None or isinstance(v, (int, float))) and not isinstance(v, bool)
    }
    series = {k: v for k, v in result.items() if k not in SETTING_KEYS and isinstance(v, dict)}
    lists = {k: v for k, v in result.items() if k not in SETTING_KEYS and isinstance(v, list)}
    width = max((len(k) for k in (*scalars, *series, *lists)), default=10) + 2
    lines += [f"{k:<{width}}{_fmt(v)}" for k, v in scalars.items()]
    lines += [f"{k:<{width}}{' '.join(map(str, v))}" for k, v in lists.items()]
    if series:
        keys = list(dict.fromkeys(h for v in series.values() for h in v))
        lines.append(f"{'horizon':<{width}}" + "".join(f"{h:>9}" for h in keys))
        lines += [f"{k:<{width}}" + "".join(f"{_fmt(v.get(h)):>9}" for h in keys) for k, v in series.items()]
    return "\n".join(lines)


__all__ = ["EVALUATORS", "evaluate", "format_table", "get_evaluator", "write_json"]
