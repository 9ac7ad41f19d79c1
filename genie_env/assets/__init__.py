"""Trained world models shipped inside the package, one bundle directory each (see ``genie-env bundle``).

* ``genie-boxing-tiny``: a tiny Genie (tokenizer, latent action model, MaskGIT dynamics) trained on Atari Boxing
  at 64x64; its ``README.md`` is the model card (data recipe, training commands, steps, wall-clock, metrics).
* ``gesim-fetchpush-tiny`` / ``gesim-fetchreach-tiny``: tiny GE-Sim worlds (Wan VAE + multi-view DiT) of FetchPush and
  FetchReach, three cameras at 64x64, with start banks (and, for Push, reward and object heads); model cards inside.

Load one with :func:`asset_path`, e.g. ``GenieWorldModel.from_pretrained(asset_path("genie-boxing-tiny"))``.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def available_assets() -> list[str]:
    """Names of the shipped bundles (directories holding a ``world_model.json``)."""
    return sorted(p.name for p in ASSETS_DIR.iterdir() if (p / "world_model.json").is_file())


def asset_path(name: str) -> Path:
    """The directory of the shipped bundle ``name``.

    Raises:
        FileNotFoundError: Naming the bundle and listing the shipped ones.
    """
    path = ASSETS_DIR / name
    if not (path / "world_model.json").is_file():
        raise FileNotFoundError(f"no shipped world model {name!r} in {ASSETS_DIR}; shipped: {available_assets()}")
    return path
