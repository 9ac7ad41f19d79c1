"""The batched, torch-native core every world-model environment is an adapter over.

A :class:`WorldCore` simulates ``num_envs`` environments at once, entirely in torch on one device: it holds the
world model, each env's state (memory frames or KV caches, poses, step count) and one ``torch.Generator`` for
all sampling. It knows nothing of Gymnasium's or SB3's calling conventions; the adapters in :mod:`envs.adapters`
(``gymnasium.Env``, ``gymnasium.vector.VectorEnv``) and :mod:`envs.sb3` (SB3 ``VecEnv``) translate, validate
and convert to ``uint8`` HWC NumPy at their boundary.

The protocol (all envs advance in lock-step, which is what makes batching pay):

* :meth:`WorldCore.restart` ``(env_ids, starts)`` puts some envs at a start of the bank, the others untouched;
* :meth:`WorldCore.step` ``(actions)`` advances every env one frame and returns rewards and terminations;
* :meth:`WorldCore.observation` is every env's current observation as torch tensors.

Autoreset is the adapters' business: they step all envs, then restart the finished ones, so a restarting env's
wasted step costs nothing extra in a batched forward pass.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces

from genie_env.precision import Precision, autocast, check_precision
from genie_env.start_states import StartStates

RewardMode = Literal["mean", "sample", "mode"]
REWARD_MODES: tuple[str, ...] = ("mean", "sample", "mode")


@dataclass
class CoreStep:
    """What one batched step produced.

    Attributes:
        reward: ``(B,)`` float32.
        terminated: ``(B,)`` bool.
        info: per-env arrays (leading axis ``B``) plus scalars shared by the batch.
    """

    reward: torch.Tensor
    terminated: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


class WorldCore(ABC):
    """Batched world-model simulator (see the module docstring).

    Subclasses set :attr:`single_observation_space`, :attr:`single_action_space`, :attr:`bank`,
    :attr:`render_fps` and :attr:`model_id`, and implement :meth:`restart`, :meth:`step`, :meth:`observation`
    and :meth:`frames`.

    Args:
        num_envs: Batch size ``B``.
        device: Torch device of the model and all state.
        precision: Arithmetic of the model inside a step (:mod:`genie_env.precision`); the state stays float32.
    """

    single_observation_space: spaces.Space
    single_action_space: spaces.Space
    bank: StartStates
    render_fps: float = 15.0
    model_id: str = ""

    def __init__(self, num_envs: int, device: torch.device | str, precision: Precision = "float32") -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.generator = torch.Generator(self.device)
        self.steps = torch.zeros(self.num_envs, dtype=torch.long)
        self.last_latency_s = 0.0

    # -- seeding ------------------------------------------------------------------------------------------------

    def seed(self, rng: np.random.Generator) -> None:
        """Seeds every torch draw of the core from ``rng`` (an env's ``np_random``)."""
        self.generator.manual_seed(int(rng.integers(0, 2**63 - 1)))

    def draw_starts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` bank indices drawn uniformly with ``rng``."""
        return rng.integers(0, len(self.bank), size=n)

    # -- the protocol -------------------------------------------------------------------------------------------

    @abstractmethod
    def restart(self, env_ids: np.ndarray, starts: np.ndarray) -> None:
        """Puts env ``env_ids[i]`` at bank start ``starts[i]``; other envs keep their state."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> CoreStep:
        """Advances every env one frame under ``actions`` (batched, already validated, on :attr:`device`)."""

    @abstractmethod
    def observation(self) -> dict[str, torch.Tensor]:
        """Every env's current observation: images ``(B, 3, H, W)`` float in [-1, 1], vectors ``(B, D)``."""

    @abstractmethod
    def frames(self) -> torch.Tensor:
        """Every env's current views, ``(B, V, 3, H, W)`` float in [-1, 1] (for rendering)."""

    def describe(self) -> dict[str, Any]:
        """Settings a user debugging drift wants in ``info`` (model id, sampler, memory window)."""
        return {"model_id": self.model_id}

    def close(self) -> None:  # noqa: B027 (optional hook: most cores hold nothing to release)
        """Releases what the core holds (nothing by default)."""

    # -- shared helpers -----------------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context :meth:`step` and :meth:`restart` run the model in (see :attr:`precision`)."""
        return autocast(self.device, self.precision)

    def timed_step(self, actions: torch.Tensor) -> CoreStep:
        """:meth:`step`, recording its wall-clock in :attr:`last_latency_s` and advancing :attr:`steps`."""
        start = time.perf_counter()
        out = self.step(actions)
        self.last_latency_s = time.perf_counter() - start
        self.steps += 1
        return out

    def mark_restarted(self, env_ids: np.ndarray) -> None:
        """Zeroes the step counters of restarted envs (called by :meth:`restart` implementations)."""
        self.steps[torch.as_tensor(env_ids, dtype=torch.long)] = 0


def head_step(
    predictions: dict[str, torch.Tensor],
    reward_table: torch.Tensor | None,
    mode: RewardMode,
    generator: torch.Generator,
    num_envs: int,
) -> CoreStep:
    """A step's rewards and terminations from learned heads (:meth:`genie_env.models.heads.WorldHeads.predict`).

    DIAMOND and IRIS sample reward and termination; ``"mean"`` (the default of our envs) gives the expected reward
    instead, a lower-variance signal for policy gradients, and terminates where the probability exceeds 1/2.
    Without a head (empty ``predictions``) the reward is 0 and nothing terminates.

    Args:
        predictions: ``reward_probs (B, K)``, ``termination_prob (B,)`` where present (``{}``: no heads).
        reward_table: ``(K,)`` the reward of every class (``WorldHeads.reward_table``).
        mode: ``"mean"``: expected reward, terminate if p > 0.5; ``"mode"``: the most likely reward, terminate if
            p > 0.5; ``"sample"``: both drawn with ``generator``.
        generator: Torch generator for ``"sample"``.
        num_envs: ``B``.

    Returns:
        Rewards and terminations on the CPU; ``info`` holds the probabilities.
    """
    reward = torch.zeros(num_envs)
    terminated = torch.zeros(num_envs, dtype=torch.bool)
    info: dict[str, Any] = {}
    if "reward_probs" in predictions and reward_table is not None:
        probs = predictions["reward_probs"]
        info["reward_probs"] = probs
        values = reward_table.to(probs.device, probs.dtype)
        if mode == "mean":
            expected = (probs * values).sum(dim=-1)
        elif mode == "mode":
            expected = values[probs.argmax(dim=-1)]
        else:
            expected = values[torch.multinomial(probs, 1, generator=generator)[:, 0]]
        reward = expected.float().cpu()
    if "termination_prob" in predictions:
        p = predictions["termination_prob"]
        info["termination_prob"] = p
        if mode == "sample":
            terminated = (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).cpu()
        else:
            terminated = (p > 0.5).cpu()
    return CoreStep(reward, terminated, info)
