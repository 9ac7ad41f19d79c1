"""Where an env's networks come from: a bundle directory or the name of a bundle shipped in the package."""

from __future__ import annotations

import os
from pathlib import Path

from genie_env.assets import ASSETS_DIR, asset_path
from genie_env.checkpoint import CheckpointError
from genie_env.models.bundle import WORLD_MODEL_FILE


def resolve_world(checkpoint: str | os.PathLike[str]) -> Path:
    """A bundle directory from a path or a shipped asset name (``"genie-boxing-tiny"``).

    Raises:
        CheckpointError: If ``checkpoint`` is neither, naming what was looked for.
    """
    path = Path(checkpoint)
    if (path / WORLD_MODEL_FILE).is_file():
        return path
    if not path.is_absolute() and len(path.parts) == 1 and (ASSETS_DIR / path / WORLD_MODEL_FILE).is_file():
        return asset_path(str(path))
    raise CheckpointError(
        f"no world model at {str(checkpoint)!r}: expected a bundle directory holding {WORLD_MODEL_FILE} "
        f"or the name of a shipped one ({', '.join(p.parent.name for p in ASSETS_DIR.glob('*/' + WORLD_MODEL_FILE))})"
    )
