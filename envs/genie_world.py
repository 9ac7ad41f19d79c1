"""Genie as an environment: discrete latent actions in, frames rendered by MaskGIT out.

:class:`GenieCore` is the batched torch core; :class:`GenieWorldEnv` and :class:`GenieWorldVectorEnv` are the
Gymnasium adapters (``gym.make("genie_env/Genie-Boxing-v0")``, ``gym.make_vec(..., vectorization_mode=
"vector_entry_point")``); :class:`~envs.sb3.SB3WorldVecEnv` wraps the same core for stable-baselines3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import torch
from gymnasium import spaces

from envs.adapters import WorldEnv, WorldVectorEnv
from envs.core import REWARD_MODES, CoreStep, RewardMode, WorldCore, head_step
from envs.loading import resolve_world
from genie_env.models.genie.maskgit import MaskGITRollout
from genie_env.models.genie.world import GenieWorldModel, _check_steps, _check_temperature
from genie_env.models.heads import WorldHeads, load_bundle_heads
from genie_env.precision import Precision
from genie_env.start_states import StartStates, frames_to_float


class GenieCore(WorldCore):
    """``num_envs`` Genie worlds stepped together with KV-cached MaskGIT.

    State per env: the dynamics model's and the tokenizer decoder's temporal key/value caches (sliding windows of
    ``context_frames - 1`` frames, so memory is bounded however long an episode runs), and the current and previous
    frame (for the reward head). A restart primes the caches of the restarting envs with a real ``P``-frame prompt
    from the bank (tokens and LAM actions computed once, when the core is built) and leaves the others untouched.

    Args:
        world: The Genie world model.
        bank: Start prompts (one camera).
        num_envs: Batch size.
        heads: Reward/termination heads, or ``None`` (reward 0, never terminates).
        maskgit_steps: MaskGIT steps per frame (default: the bundle's).
        temperature: Sampling temperature, 0 = argmax (default: the bundle's).
        reward_mode: ``"mean"``, ``"mode"`` or ``"sample"`` (see :func:`envs.core.head_step`).
        device: Torch device.
        precision: ``"float32"`` or ``"bfloat16"`` arithmetic in a step (:mod:`genie_env.precision`).
        model_id: Name reported in ``info``.
    """

    def __init__(
        self,
        world: GenieWorldModel,
        bank: StartStates,
        num_envs: int = 1,
        *,
        heads: WorldHeads | None = None,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        reward_mode: RewardMode = "mean",
        device: torch.device | str = "cpu",
        precision: Precision = "float32",
        model_id: str = "genie",
    ) -> None:
        super().__init__(num_envs, device, precision)
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        c, h, w = world.frame_shape
        if bank.frames.shape[1] != 1 or tuple(bank.frames.shape[3:]) != (h, w, c):
            raise ValueError(
                f"a Genie env needs a one-camera bank of {h}x{w} frames, got frames {tuple(bank.frames.shape)} "
                f"(cameras {bank.cameras})"
            )
        self.world = world.to(self.device).eval()
        self.bank, self.heads, self.reward_mode, self.model_id = bank, heads, reward_mode, model_id
        self.maskgit_steps = world.maskgit_steps if maskgit_steps is None else _check_steps(maskgit_steps)
        self.temperature = world.temperature if temperature is None else _check_temperature(temperature)
        self.single_observation_space = spaces.Box(0, 255, (h, w, c), np.uint8)
        self.single_action_space = spaces.Discrete(world.num_actions)

        prompts = frames_to_float(bank.frames[:, 0]).to(self.device)  # (N, P, C, H, W)
        self.bank_tokens = world.encode(prompts)  # (N, P, h, w)
        self.bank_actions = (
            world.infer_actions(prompts) if prompts.shape[1] > 1 else self.bank_tokens.new_empty(len(bank), 0)
        )
        self.sampler = MaskGITRollout(world.dynamics, steps=self.maskgit_steps, temperature=self.temperature)
        self.sampler.cache = world.dynamics.new_cache(self.num_envs)
        self.decode_cache = world.tokenizer.new_decode_cache(self.num_envs)
        self.current = torch.zeros(self.num_envs, c, h, w, device=self.device)
        self.previous = torch.zeros_like(self.current)
        if heads is not None:
            self.heads = heads.to(self.device).eval()

    @torch.no_grad()
    def restart(self, env_ids: np.ndarray, starts: np.ndarray) -> None:
        order = np.argsort(env_ids)
        env_ids, starts = np.asarray(env_ids)[order], np.asarray(starts)[order]
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[torch.as_tensor(env_ids, device=self.device)] = True
        index = torch.as_tensor(starts, device=self.device)
        tokens, actions = self.bank_tokens[index], self.bank_actions[index]
        dynamics, tokenizer = self.world.dynamics, self.world.tokenizer
        with self.autocast():
            prompt_cache = dynamics.new_cache(len(env_ids))
            dynamics.append_frames(tokens, dynamics.frame_actions(actions), prompt_cache)
            self.sampler.cache.load_streams(mask, prompt_cache)  # type: ignore[union-attr]
            decode_cache = tokenizer.new_decode_cache(len(env_ids))
            decoded = tokenizer.decode_step(tokens, decode_cache).float()  # (n, P, C, H, W): the prompt as seen
            self.decode_cache.load_streams(mask, decode_cache)
        self.current[mask] = decoded[:, -1]
        self.previous[mask] = decoded[:, -2] if decoded.shape[1] > 1 else decoded[:, -1]
        self.mark_restarted(env_ids)

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> CoreStep:
        actions = actions.to(self.device, torch.long).reshape(self.num_envs)
        with self.autocast():
            tokens = self.sampler.step(actions, generator=self.generator)  # (B, h, w)
            frames = self.world.tokenizer.decode_step(tokens[:, None], self.decode_cache)[:, 0].float()
        self.previous, self.current = self.current, frames
        if self.heads is None:
            return head_step({}, None, self.reward_mode, self.generator, self.num_envs)
        # The heads are cheap and their probabilities become rewards: always float32.
        predictions = self.heads.predict(self.previous[:, None], self.current[:, None])
        return head_step(predictions, self.heads.reward_table, self.reward_mode, self.generator, self.num_envs)

    def observation(self) -> dict[str, torch.Tensor]:
        return {"image": self.current}

    def frames(self) -> torch.Tensor:
        return self.current[:, None]

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "memory_window": int(self.world.dynamics.config.context_frames),
            "maskgit_steps": self.maskgit_steps,
            "temperature": self.temperature,
            "precision": self.precision,
        }


class GenieOptions(TypedDict, total=False):
    """Keyword options of every Genie env (see :class:`GenieWorldEnv`)."""

    device: torch.device | str
    maskgit_steps: int | None
    temperature: float | None
    reward_mode: RewardMode
    precision: Precision


def build_genie_core(
    checkpoint: str | os.PathLike[str], num_envs: int = 1, **options: Unpack[GenieOptions]
) -> GenieCore:
    """A :class:`GenieCore` from a bundle directory or a shipped asset name (e.g. ``"genie-boxing-tiny"``).

    The bundle must hold ``start_states.safetensors``; ``heads/`` is optional (without it rewards are 0).
    """
    root = resolve_world(checkpoint)
    device = options.get("device", "cpu")
    world = GenieWorldModel.from_pretrained(root, device=device)
    return GenieCore(
        world, StartStates.load(root), num_envs, heads=load_bundle_heads(root), model_id=Path(root).name, **options
    )


class GenieWorldEnv(WorldEnv):
    """A Genie world model as a Gymnasium environment: pick a latent action, get the next frame.

    Genie's actions are the discrete latent actions its LAM learned from video alone; what each one does is
    found by playing (``genie-env play``) or mapped from real actions (``agents.latent_mapping``).

    **Action space**: ``Discrete(n_latent_actions)`` (8 for the shipped Boxing model).

    **Observation space**: ``Box(0, 255, (H, W, 3), uint8)``, the rendered frame (64x64 for Boxing).

    **Starting state**: a real recorded ``P``-frame prompt from the bundle's start-state bank, drawn with
    ``np_random`` (``options={"start": i}`` picks one); the first observation is its last frame as the tokenizer
    renders it.

    **Rewards**: from the learned reward head (``genie-env train heads``), the expected reward by default
    (``reward_mode``); 0 if the bundle has no heads. ``info["reward_probs"]`` holds the class probabilities.

    **Episode end**: terminated where the termination head says so (probability > 0.5 by default); truncated by
    the ``TimeLimit`` of the registered id (Genie-Boxing-v0: 1000 steps).

    **Info**: ``model_id``, ``memory_window`` (frames of context), ``maskgit_steps``, ``temperature``, ``step``,
    ``timing`` (:class:`~envs.adapters.StepTiming`), and head probabilities.

    Args:
        checkpoint: Bundle directory or shipped asset name.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        device: Torch device of the model.
        maskgit_steps: MaskGIT steps per frame (default: the bundle's).
        temperature: Sampling temperature (default: the bundle's; 0 = argmax).
        reward_mode: ``"mean"``, ``"mode"`` or ``"sample"``.
        precision: ``"float32"`` (default) or ``"bfloat16"`` arithmetic; bfloat16 is faster on CPUs with AMX
            and on GPUs (:mod:`genie_env.precision`).

    Version history:
        * v0: first release (tiny Boxing model, 64x64, 8 latent actions).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] = "genie-boxing-tiny",
        render_mode: str | None = None,
        **options: Unpack[GenieOptions],
    ) -> None:
        super().__init__(build_genie_core(checkpoint, 1, **options), render_mode)


class GenieWorldVectorEnv(WorldVectorEnv):
    """``num_envs`` :class:`GenieWorldEnv` stepped as one batch (``gym.make_vec(..., "vector_entry_point")``).

    Args:
        num_envs: Batch size.
        checkpoint: Bundle directory or shipped asset name.
        max_episode_steps: Truncation horizon (``gym.make_vec`` passes the registered one).
        render_mode: ``None`` or ``"rgb_array"``.
        device, maskgit_steps, temperature, reward_mode, precision: as :class:`GenieWorldEnv`.
    """

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | os.PathLike[str] = "genie-boxing-tiny",
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        **options: Unpack[GenieOptions],
    ) -> None:
        super().__init__(build_genie_core(checkpoint, num_envs, **options), max_episode_steps, render_mode)
