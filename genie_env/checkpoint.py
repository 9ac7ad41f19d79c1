"""Atomic, self-describing checkpoints of diffusers models.

A checkpoint is a directory::

    step_00001000/
        meta.json                 genie-env version, step, wall-clock time, config, metrics, model classes
        <name>/config.json        one folder per model, written by ``ModelMixin.save_pretrained``
        <name>/diffusion_pytorch_model.safetensors
        training_state.pt         optional: optimizer, scheduler, RNG states, ... (``torch.save``)

Writes are atomic at the directory level: everything goes into a hidden sibling ``.<name>.tmp-XXXX``, is
fsynced, and is renamed into place. An existing checkpoint at the final path is first renamed aside, then
replaced, then deleted, so the final path holds either the complete old checkpoint or the complete new one,
never a partial one. (A power cut between the two renames leaves the old one under ``.<name>.old-XXXX`` and
no directory at the final path; :func:`latest_checkpoint` then returns an earlier, complete checkpoint.)

Runs keep their checkpoints under ``RUN_DIR/checkpoints/step_XXXXXXXX`` (:func:`checkpoint_path`).

This module is part of the core package: it imports nothing from ``training``, ``envs`` or ``agents``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers.models.modeling_utils import ModelMixin
from safetensors import SafetensorError
from safetensors.torch import load_file

from genie_env import __version__

META_FILE = "meta.json"
"""Checkpoint metadata, written last."""
STATE_FILE = "training_state.pt"
"""Optional non-model training state (``torch.save``, loaded with ``weights_only=True``)."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
CHECKPOINTS_DIR = "checkpoints"
"""Sub-folder of a run directory holding its checkpoints."""
FORMAT_VERSION = 1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STEP_DIR = re.compile(r"^step_(\d+)$")
_RESERVED = {META_FILE, STATE_FILE}

M = TypeVar("M", bound=ModelMixin)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt; the message names the offending file."""


# --- saving ----------------------------------------------------------------------------------------------


def _fsync_tree(root: Path) -> None:
    """Flushes every file and directory under ``root`` (inclusive) to disk."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def save_checkpoint(
    path: str | os.PathLike[str],
    models: Mapping[str, ModelMixin],
    meta: Mapping[str, Any] | None = None,
    *,
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Writes a checkpoint directory atomically, replacing any checkpoint already at ``path``.

    Args:
        path: Final checkpoint directory, e.g. ``run/checkpoints/step_00001000``.
        models: Models to save, by folder name (``save_pretrained``: safetensors + ``config.json``).
        meta: JSON-serialisable metadata, conventionally ``step``, ``config`` and ``metrics``. The keys
            ``genie_env_version``, ``format_version``, ``saved_at``, ``saved_at_iso`` and ``models``
            (name -> class) are added.
        state: Optional extra training state (tensors, numbers, strings, lists, dicts), saved with
            ``torch.save`` to ``training_state.pt``.

    Returns:
        The final path.

    Raises:
        ValueError: On an invalid model name.
        Exception: Whatever interrupted the write; the previous checkpoint at ``path`` (if any) is intact and
            the temporary directory is removed.
    """
    final = Path(path)
    for name in models:
        if not _NAME.match(name) or name in _RESERVED:
            raise ValueError(f"invalid model name {name!r} (letters, digits, '_', '-', '.'; not {sorted(_RESERVED)})")
    with atomic_directory(final) as tmp:
        # Everything goes into the hidden temp dir; meta.json last.
        for name, model in models.items():
            model.save_pretrained(tmp / name, safe_serialization=True)
        if state is not None:
            torch.save(dict(state), tmp / STATE_FILE)
        now = time.time()
        full_meta = {
            "genie_env_version": __version__,
            "format_version": FORMAT_VERSION,
            "saved_at": now,
            "saved_at_iso": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            **dict(meta or {}),
            "models": {name: f"{type(m).__module__}.{type(m).__qualname__}" for name, m in models.items()},
        }
        _write_json(tmp / META_FILE, full_meta)
    return final


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a hidden temporary sibling of ``path`` to fill; on success it is fsynced and swapped into place.

    ``path`` then holds either its complete old content or the complete new one, never a partial one; on an
    exception the temporary directory is removed and whatever was at ``path`` is left intact.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        _fsync_tree(tmp)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    """Renames ``src`` to ``dst``; an existing ``dst`` is renamed aside first and deleted afterwards."""
    if not dst.exists():
        os.rename(src, dst)
        _fsync_dir(dst.parent)
        return
    aside = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
    os.rmdir(aside)  # only the unique name is wanted; rename needs it free
    os.rename(dst, aside)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(aside, dst)  # put the old checkpoint back
        raise
    _fsync_dir(dst.parent)
    shutil.rmtree(aside, ignore_errors=True)


# --- loading ---------------------------------------------------------------------------------------------


def _read_json_object(file: Path, what: str, missing_hint: str = "") -> dict[str, Any]:
    """Read a JSON object file; a missing or corrupt file raises :class:`CheckpointError` naming it."""
    if not file.is_file():
        raise CheckpointError(f"{what} missing: {file}{missing_hint}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt {what} {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"corrupt {what} {file}: expected a JSON object")
    return data


def load_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``meta.json`` of a checkpoint.

    Raises:
        CheckpointError: If the file is missing or is not a JSON object.
    """
    file = Path(path) / META_FILE
    return _read_json_object(file, "checkpoint metadata", " (incomplete or not a checkpoint)")


def _weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a ``save_pretrained`` folder (one file, or the shards of an index)."""
    single, index = model_dir / WEIGHTS_FILE, model_dir / WEIGHTS_INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"corrupt weight index {index}: {exc}") from exc
        shards = [model_dir / f for f in sorted(set(weight_map.values()))]
        for shard in shards:
            if not shard.is_file():
                raise CheckpointError(f"model weights missing: {shard} (listed in {index})")
        return shards
    raise CheckpointError(f"model weights missing: {single}")


def _check_config(model_dir: Path) -> dict[str, Any]:
    return _read_json_object(model_dir / CONFIG_FILE, "model config")


def read_weights(model_dir: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Reads the state dict saved by ``save_pretrained`` in ``model_dir`` (on the CPU).

    Raises:
        CheckpointError: If the weights are missing or a file is corrupt (the message names the file).
    """
    weights: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(model_dir)):
        try:
            weights.update(load_file(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"corrupt model weights {file}: {exc}") from exc
    return weights


def load_models(path: str | os.PathLike[str], classes: Mapping[str, type[M]]) -> dict[str, M]:
    """Builds models from a checkpoint with ``from_pretrained``.

    Args:
        path: Checkpoint directory.
        classes: Model class per folder name, e.g. ``{"vae": GeSimVAE}``.

    Returns:
        The models, by name, in eval mode.

    Raises:
        CheckpointError: If ``meta.json``, a model's ``config.json`` or its weights are missing or corrupt.
    """
    root = Path(path)
    load_meta(root)  # a checkpoint without meta.json is not a complete checkpoint
    out: dict[str, M] = {}
    for name, cls in classes.items():
        out[name] = load_model_dir(root / name, cls)
    return out


def load_model_dir(model_dir: str | os.PathLike[str], cls: type[M]) -> M:
    """Builds a model from one ``save_pretrained`` folder (of a checkpoint or a bundle), in eval mode.

    Raises:
        CheckpointError: Naming the path, if the folder, its ``config.json`` or its weights are missing or corrupt.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model {model_dir.name!r} missing: {model_dir} does not exist")
    _check_config(model_dir)
    read_weights(model_dir)  # validates every weight file, naming the corrupt one
    try:
        model = cls.from_pretrained(model_dir)
    except Exception as exc:  # diffusers raises several types; keep the path in the message
        raise CheckpointError(f"cannot load {cls.__name__} from {model_dir}: {exc}") from exc
    return model.eval()


def load_weights_into(path: str | os.PathLike[str], models: Mapping[str, torch.nn.Module]) -> None:
    """Loads a checkpoint's weights into existing models in place (strict: every key must match).

    Raises:
        CheckpointError: On a missing or corrupt file, or weights that do not fit the model.
    """
    root = Path(path)
    for name, model in models.items():
        model_dir = root / name
        _check_config(model_dir)
        weights = read_weights(model_dir)
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"weights in {model_dir} do not fit {type(model).__name__}: {exc}") from exc


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``training_state.pt`` (``weights_only=True``: tensors and plain Python containers only).

    Raises:
        CheckpointError: If the file is missing or corrupt.
    """
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"training state missing: {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        raise CheckpointError(f"corrupt training state {file}: {exc}") from exc


# --- run directories -------------------------------------------------------------------------------------


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``RUN_DIR/checkpoints/step_XXXXXXXX``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run (those with a ``meta.json``), oldest step first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / META_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the highest step, or ``None``."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(run_dir: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Deletes all but the newest ``keep_last`` checkpoints (``0`` keeps all); returns the deleted paths."""
    if keep_last <= 0:
        return []
    old = list_checkpoints(run_dir)[:-keep_last]
    for path in old:
        shutil.rmtree(path)
    return old


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory from either a checkpoint directory or a run directory (its latest checkpoint).

    Raises:
        CheckpointError: If ``path`` is neither.
    """
    root = Path(path)
    if (root / META_FILE).is_file():
        return root
    latest = latest_checkpoint(root)
    if latest is None:
        raise CheckpointError(f"{root} is neither a checkpoint (no {META_FILE}) nor a run directory with checkpoints")
    return latest


def load_model(path: str | os.PathLike[str], name: str, cls: type[M], *, prefer_ema: bool = True) -> M:
    """One model of a checkpoint or of a run's latest checkpoint, in eval mode.

    Args:
        path: Checkpoint directory or run directory.
        name: Model folder name, e.g. ``"tokenizer"``.
        cls: Its class.
        prefer_ema: Load the exponential moving average ``<name>_ema`` when the checkpoint has one.
    """
    root = resolve_checkpoint(path)
    folder = f"{name}_ema" if prefer_ema and (root / f"{name}_ema").is_dir() else name
    return load_models(root, {folder: cls})[folder].eval()
