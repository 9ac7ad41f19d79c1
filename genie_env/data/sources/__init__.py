"""Real simulators we record from: MuJoCo Fetch (three cameras with geometry) and Atari (ale-py)."""

from __future__ import annotations

from genie_env.data.sources.base import Frame, RealSource, StepResult

__all__ = ["Frame", "RealSource", "StepResult", "make_source", "supported_env_ids"]


def supported_env_ids() -> list[str]:
    """Ids ``make_source`` accepts: the Fetch tasks and every ALE id of ale-py."""
    import ale_py
    import gymnasium as gym

    from genie_env.data.sources.fetch import FETCH_TASKS

    gym.register_envs(ale_py)
    return sorted(FETCH_TASKS) + sorted(k for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5"))


def make_source(env_id: str, size: int = 64, max_episode_steps: int | None = None) -> RealSource:
    """Build the recorder for ``env_id``.

    Raises:
        ValueError: for an id we cannot record, listing the supported ones.
    """
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an integer in [16, 1024], got {size!r}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be positive, got {max_episode_steps}")
    from genie_env.data.sources.fetch import FETCH_TASKS, FetchSource

    if env_id in FETCH_TASKS:
        return FetchSource(env_id, size, max_episode_steps)
    supported = supported_env_ids()
    if env_id.startswith("ALE/") and env_id in supported:
        from genie_env.data.sources.atari import AtariSource

        return AtariSource(env_id, size, max_episode_steps)
    fetch = ", ".join(sorted(FETCH_TASKS))
    raise ValueError(
        f"unknown env id {env_id!r}. Supported: {fetch}, and any Atari id 'ALE/<Game>-v5' "
        f"({len(supported) - len(FETCH_TASKS)} available, e.g. ALE/Boxing-v5, ALE/Breakout-v5, ALE/Pong-v5)"
    )
