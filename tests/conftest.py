"""Shared fixtures: small real recordings, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(scope="session")
def fetch_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 12-step FetchPush-v4 episodes (mixed policy), three cameras at 64x64."""
    from genie_env.data.collect import collect

    root = tmp_path_factory.mktemp("data") / "fetch"
    collect("FetchPush-v4", 3, root, seed=0, size=64, policy="mixed", max_steps=12, progress=False)
    return root


@pytest.fixture(scope="session")
def atari_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 30-step ALE/Boxing-v5 episodes at 64x64."""
    from genie_env.data.collect import collect

    root = tmp_path_factory.mktemp("data") / "boxing"
    collect("ALE/Boxing-v5", 2, root, seed=0, size=64, policy="scripted", max_steps=30, progress=False)
    return root
