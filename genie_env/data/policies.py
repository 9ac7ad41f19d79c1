"""Policies that drive the real simulators while we record: scripted, random, and a mix of both.

A policy sees the recorded frame (so it works in the same base frame as the dataset) and a
``numpy.random.Generator`` owned by the collector, so every episode is reproducible from its seed.

Fetch (actions ``(dx, dy, dz, gripper)`` in [-1, 1], 5 cm per unit):

* ``scripted``: a task controller (reach the goal; push the block from behind towards the goal; pick the
  block and carry it to the goal) with Gaussian action noise, so it succeeds often but not always.
* ``random``: uniform actions, each held for 1-4 steps so the arm wanders instead of trembling in place.
* ``mixed`` (default): per episode, 50% scripted, 30% scripted with random-action bursts, 20% random.

Atari has no task controller here: ``scripted`` holds each uniformly drawn action for 1-8 steps (visible,
sustained motion that a latent action model can pick up), ``random`` draws a uniform action every step, and
``mixed`` chooses between the two per episode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import gymnasium as gym
import numpy as np

from genie_env.data.sources.base import Frame

POLICY_NAMES = ("scripted", "random", "mixed")


class Policy(ABC):
    """Maps a recorded frame to an action; :meth:`reset` is called at every episode start."""

    #: What kind of episode this policy played last (``"scripted"``, ``"random"``, ...), for the dataset.
    mode: str = ""

    def reset(self, rng: np.random.Generator) -> None:  # noqa: B027  (optional hook)
        """Start a new episode."""

    @abstractmethod
    def __call__(self, frame: Frame, rng: np.random.Generator) -> np.ndarray:
        """Return the action to take at ``frame``."""


class HeldRandomPolicy(Policy):
    """Uniform random actions, each held for a random 1..``max_hold`` steps."""

    def __init__(self, action_space: gym.Space, max_hold: int = 1) -> None:
        if max_hold < 1:
            raise ValueError(f"max_hold must be >= 1, got {max_hold}")
        self.action_space, self.max_hold = action_space, max_hold
        self.mode = "random"
        self._action: np.ndarray | None = None
        self._left = 0

    def reset(self, rng: np.random.Generator) -> None:
        """Forget the held action."""
        self._left = 0

    def _sample(self, rng: np.random.Generator) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return np.array([int(space.start) + int(rng.integers(space.n))], dtype=np.int64)
        if isinstance(space, gym.spaces.Box):
            return rng.uniform(space.low, space.high).astype(np.float32)
        raise TypeError(f"unsupported action space {space}")

    def __call__(self, frame: Frame, rng: np.random.Generator) -> np.ndarray:
        if self._left <= 0 or self._action is None:
            self._action = self._sample(rng)
            self._left = int(rng.integers(1, self.max_hold + 1))
        self._left -= 1
        return self._action.copy()


def _toward(target: np.ndarray, tip: np.ndarray, gain: float = 10.0) -> np.ndarray:
    """Proportional step towards ``target`` (metres -> action units, 1 unit = 5 cm)."""
    return np.clip(gain * (target - tip), -1.0, 1.0)


class FetchScriptedPolicy(Policy):
    """Task controller for Fetch Reach / Push / PickAndPlace with Gaussian action noise.

    Args:
        task: ``"reach"``, ``"push"`` or ``"pick"``.
        noise: standard deviation of the Gaussian noise added to each action (before clipping).
    """

    def __init__(self, task: str, noise: float = 0.2) -> None:
        if task not in ("reach", "push", "pick"):
            raise ValueError(f"task must be 'reach', 'push' or 'pick', got {task!r}")
        self.task, self.noise = task, noise
        self.mode = "scripted"
        self._grasp_steps = 0

    def reset(self, rng: np.random.Generator) -> None:
        """Restart the controller's phase machine."""
        self._grasp_steps = 0

    def _clean_action(self, frame: Frame) -> np.ndarray:
        tip = frame["observation.state"][:3].astype(np.float64)
        goal = frame["observation.goal"].astype(np.float64)
        if self.task == "reach":
            return np.append(_toward(goal, tip), 0.0)
        obj = frame["observation.object"].astype(np.float64)
        if self.task == "push":
            direction = goal[:2] - obj[:2]
            direction /= np.linalg.norm(direction) + 1e-8
            behind = obj.copy()
            behind[:2] -= 0.06 * direction
            # Approach from above until behind the block, then push through it towards the goal.
            if np.linalg.norm(tip[:2] - behind[:2]) > 0.02 and np.dot(tip[:2] - obj[:2], direction) > -0.04:
                hover = behind.copy()
                hover[2] = obj[2] + 0.08
                return np.append(_toward(hover, tip), -1.0)
            if np.linalg.norm(tip[:2] - behind[:2]) > 0.02 and tip[2] > obj[2] + 0.02:
                return np.append(_toward(behind, tip), -1.0)
            target = goal.copy()
            target[:2] -= 0.03 * direction
            target[2] = obj[2]
            return np.append(_toward(target, tip), -1.0)
        # pick: hover above the block open, descend, close for a few steps, carry to the goal.
        above = obj + np.array([0.0, 0.0, 0.06])
        if self._grasp_steps == 0:
            if np.linalg.norm(tip[:2] - obj[:2]) > 0.01:
                return np.append(_toward(above, tip), 1.0)
            if tip[2] - obj[2] > 0.01:
                return np.append(_toward(obj, tip), 1.0)
        if self._grasp_steps < 4:
            self._grasp_steps += 1
            return np.array([0.0, 0.0, 0.0, -1.0])
        return np.append(_toward(goal, tip), -1.0)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> np.ndarray:
        action = self._clean_action(frame) + rng.normal(0.0, self.noise, 4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class BurstPolicy(Policy):
    """Follows ``base`` but replaces random stretches of 2-8 steps (about 30% of steps) with random actions."""

    def __init__(self, base: Policy, random: Policy) -> None:
        self.base, self.random = base, random
        self.mode = "scripted+bursts"
        self._left = 0

    def reset(self, rng: np.random.Generator) -> None:
        """Reset both policies."""
        self.base.reset(rng)
        self.random.reset(rng)
        self._left = 0

    def __call__(self, frame: Frame, rng: np.random.Generator) -> np.ndarray:
        if self._left <= 0 and rng.random() < 0.08:
            self._left = int(rng.integers(2, 9))
        action = self.base(frame, rng)
        if self._left > 0:
            self._left -= 1
            return self.random(frame, rng)
        return action


class MixedPolicy(Policy):
    """Chooses one of several policies per episode with fixed probabilities."""

    def __init__(self, choices: list[tuple[float, Policy]]) -> None:
        total = sum(p for p, _ in choices)
        if not choices or total <= 0:
            raise ValueError("MixedPolicy needs at least one choice with positive probability")
        self.probs = np.array([p / total for p, _ in choices])
        self.policies = [pol for _, pol in choices]
        self.current = self.policies[0]

    @property
    def mode(self) -> str:  # type: ignore[override]
        """The mode of the policy playing the current episode."""
        return self.current.mode

    def reset(self, rng: np.random.Generator) -> None:
        """Draw the policy for the new episode."""
        self.current = self.policies[int(rng.choice(len(self.policies), p=self.probs))]
        self.current.reset(rng)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> np.ndarray:
        return self.current(frame, rng)


def make_policy(name: str, env_id: str, action_space: gym.Space) -> Policy:
    """Build the named recording policy for ``env_id`` (see the module docstring).

    Raises:
        ValueError: for an unknown policy name.
    """
    if name not in POLICY_NAMES:
        raise ValueError(f"unknown policy {name!r}; expected one of {POLICY_NAMES}")
    if env_id.startswith("Fetch"):
        task = {"FetchReach-v4": "reach", "FetchPush-v4": "push", "FetchPickAndPlace-v4": "pick"}[env_id]
        scripted = FetchScriptedPolicy(task)
        random = HeldRandomPolicy(action_space, max_hold=4)
        if name == "scripted":
            return scripted
        if name == "random":
            return random
        bursts = BurstPolicy(FetchScriptedPolicy(task), HeldRandomPolicy(action_space, max_hold=4))
        return MixedPolicy([(0.5, scripted), (0.3, bursts), (0.2, random)])
    held = HeldRandomPolicy(action_space, max_hold=8)
    held.mode = "held-random"
    iid = HeldRandomPolicy(action_space, max_hold=1)
    if name == "scripted":
        return held
    if name == "random":
        return iid
    return MixedPolicy([(0.5, held), (0.5, iid)])
