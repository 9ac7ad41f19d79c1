"""Every environment id of the package, registered with Gymnasium when ``genie_env`` is imported.

Entry points are strings, so importing ``genie_env`` loads no network and imports nothing from ``envs``; the
classes are imported by ``gym.make`` / ``gym.make_vec`` when an id is made. Without importing the package first,
``gym.make("genie_env:genie_env/Genie-Boxing-v0")`` imports it for you.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

NAMESPACE = "genie_env"

ENV_IDS: dict[str, dict[str, Any]] = {
    # Shipped checkpoints. The two Fetch worlds share one VAE and have a DiT each (trained on their own recording).
    "Genie-Boxing-v0": {
        "entry_point": "envs.genie_world:GenieWorldEnv",
        "vector_entry_point": "envs.genie_world:GenieWorldVectorEnv",
        "max_episode_steps": 1000,
        "kwargs": {"checkpoint": "genie-boxing-tiny"},
    },
    "GESim-FetchPush-v0": {
        "entry_point": "envs.gesim_world:GESimWorldEnv",
        "vector_entry_point": "envs.gesim_world:GESimWorldVectorEnv",
        "max_episode_steps": 50,
        "kwargs": {"checkpoint": "gesim-fetchpush-tiny", "task": "FetchPush-v4"},
    },
    "GESim-FetchReach-v0": {
        "entry_point": "envs.gesim_world:GESimWorldEnv",
        "vector_entry_point": "envs.gesim_world:GESimWorldVectorEnv",
        "max_episode_steps": 50,
        "kwargs": {"checkpoint": "gesim-fetchreach-tiny", "task": "FetchReach-v4"},
    },
    # Any bundle: gym.make("genie_env/Genie-v0", checkpoint="bundles/my_genie").
    "Genie-v0": {
        "entry_point": "envs.genie_world:GenieWorldEnv",
        "vector_entry_point": "envs.genie_world:GenieWorldVectorEnv",
        "max_episode_steps": 1000,
    },
    "GESim-v0": {
        "entry_point": "envs.gesim_world:GESimWorldEnv",
        "vector_entry_point": "envs.gesim_world:GESimWorldVectorEnv",
        "max_episode_steps": 50,
    },
}
"""Registration arguments by name (the full id is ``genie_env/<name>``)."""


def register_envs() -> list[str]:
    """Registers every id (idempotent: re-registering replaces the spec); returns the full ids."""
    ids = []
    for name, spec in ENV_IDS.items():
        env_id = f"{NAMESPACE}/{name}"
        if env_id in gym.registry:
            del gym.registry[env_id]
        gym.register(id=env_id, **spec)
        ids.append(env_id)
    return ids
