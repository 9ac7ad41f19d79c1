"""Shared fixtures: small real recordings, made once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def gesim_bundle(tmp_path_factory: pytest.TempPathFactory, fetch_dataset: Path) -> Path:
    """An untrained tiny GE-Sim bundle (2 blocks, 2 Euler steps) with a start bank of the FetchPush fixture.

    World-model envs, play and the bench check contracts that do not depend on training.
    """
    import torch

    from genie_env.models.gesim import build_dit, build_vae
    from genie_env.models.gesim.world import GeSimWorldModel
    from genie_env.start_states import START_STATES_FILE, build_start_states

    torch.manual_seed(0)
    world = GeSimWorldModel(
        build_vae("tiny"),
        build_dit("tiny", num_layers=2, num_tasks=2),
        cameras=["front", "side", "hand"],
        n_memory=3,
        steps=2,
        tasks=["push the block to the goal"],
    )
    root = world.save_pretrained(tmp_path_factory.mktemp("bundles") / "gesim")
    build_start_states(fetch_dataset).save(root / START_STATES_FILE)
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models gain nothing from two, and lose a lot when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """Later tests in the session may build an ``Accelerator`` with other settings (e.g. bf16)."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
