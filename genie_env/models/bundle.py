"""World-model bundles: the self-contained directory a trained world model is shipped, evaluated and played from.

A bundle is a directory::

    world_model.json              {"type": "genie" | ..., "genie_env_version": ..., model-specific keys, "provenance"}
    <name>/config.json            one ``save_pretrained`` folder per network
    <name>/diffusion_pytorch_model.safetensors

Unlike a training checkpoint (:mod:`genie_env.checkpoint`) it holds no optimiser state and exactly the networks
needed at inference (EMA weights where training kept them). ``world_model.json``'s ``"type"`` says which world
model class reads it; :mod:`genie_env.eval` dispatches on it. Writes are atomic at the directory level, with the
same temp-dir-and-rename scheme as checkpoints, and ``world_model.json`` is written last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from diffusers.models.modeling_utils import ModelMixin

from genie_env import __version__
from genie_env.checkpoint import CheckpointError, _read_json_object, _write_json, atomic_directory, load_model_dir

WORLD_MODEL_FILE = "world_model.json"
"""Bundle description, written last; its ``"type"`` names the world model."""

M = TypeVar("M", bound=ModelMixin)


def read_bundle_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks ``world_model.json`` of a bundle.

    Raises:
        CheckpointError: If the directory or the file is missing, corrupt, or has no string ``"type"``.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"world-model bundle not found: {root} is not a directory")
    file = root / WORLD_MODEL_FILE
    info = _read_json_object(file, "world-model description", " (not a world-model bundle?)")
    if not isinstance(info.get("type"), str):
        raise CheckpointError(f"{file}: expected a string 'type' (e.g. 'genie'), got {info.get('type')!r}")
    return info


def save_bundle(path: str | os.PathLike[str], models: Mapping[str, ModelMixin], info: Mapping[str, Any]) -> Path:
    """Writes a bundle directory atomically, replacing any bundle already at ``path``.

    Args:
        path: Final bundle directory.
        models: Networks by folder name (``save_pretrained``: safetensors + ``config.json``).
        info: JSON-serialisable description; must hold ``"type"``. ``genie_env_version`` is set to this version.

    Returns:
        The final path.
    """
    if not isinstance(info.get("type"), str):
        raise ValueError(f"bundle info needs a string 'type', got {info.get('type')!r}")
    with atomic_directory(path) as tmp:
        for name, model in models.items():
            model.save_pretrained(tmp / name, safe_serialization=True)
        # The description goes last: a directory without it is never mistaken for a complete bundle.
        rest = {k: v for k, v in info.items() if k not in ("type", "genie_env_version")}
        _write_json(tmp / WORLD_MODEL_FILE, {"type": info["type"], "genie_env_version": __version__, **rest})
    return Path(path)


def load_bundle_model(path: str | os.PathLike[str], name: str, cls: type[M]) -> M:
    """One network of a bundle, in eval mode, on the CPU.

    Raises:
        CheckpointError: Naming the path, if the folder, its ``config.json`` or its weights are missing or corrupt.
    """
    return load_model_dir(Path(path) / name, cls)
