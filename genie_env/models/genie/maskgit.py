"""MaskGIT sampling of the next frame's tokens, uncached (reference) and KV-cached (batched envs).

Algorithm (Chang et al. 2022, as used by Genie with 25 steps): start with every token of the new frame set to MASK.
At step ``k = 1 .. steps``:

1. run the model on the current frame (MASK where still unknown) and sample a token at every position from
   ``softmax(logits / temperature)`` (argmax when ``temperature == 0``);
2. score each still-masked position by the log-probability of its sample (plus optional Gumbel noise
   ``choice_temperature * (1 - k / steps)``, MaskGIT's annealed "choice temperature");
3. reveal the highest-scoring masked positions so that ``floor(N * cos(pi/2 * k / steps))`` stay masked (cosine
   schedule; at least one is revealed per step, and the last step reveals everything);
4. feed the frame -- revealed tokens included -- back into step 1. Revealed tokens are never re-masked or
   resampled.

All randomness comes from the ``torch.Generator`` argument (it must live on the model's device), so a fixed seed
gives a fixed rollout. The output head only has ``codebook_size`` logits, so MASK is never produced.

Two front ends share :func:`maskgit_sample`:

* :func:`sample_next_frame` -- recomputes the whole history every step; simple, slow, the reference.
* :class:`MaskGITRollout` -- keeps a :class:`~genie_env.models.genie.dynamics.DynamicsCache` so every MaskGIT step
  runs the transformer on the new frame only, plus one extra pass to cache the finished frame. Given the same
  seed it produces the same tokens as :func:`sample_next_frame` (up to float round-off in the logits). The cache
  is a sliding window of ``context_frames - 1`` past frames; the uncached path applies the same window through its
  attention mask, so the two agree at any rollout length.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

from genie_env.models.genie.dynamics import NO_ACTION, DynamicsCache, DynamicsModel


def cosine_schedule(progress: float) -> float:
    """Fraction of tokens still masked after a fraction ``progress`` in ``[0, 1]`` of the steps."""
    return math.cos(math.pi / 2.0 * progress)


@torch.no_grad()
def maskgit_sample(
    logits_fn: Callable[[Tensor], Tensor],
    batch_size: int,
    num_tokens: int,
    mask_id: int,
    *,
    steps: int = 25,
    temperature: float = 1.0,
    choice_temperature: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    trace: list[Tensor] | None = None,
) -> Tensor:
    """Iteratively unmask one frame of ``num_tokens`` tokens.

    Args:
        logits_fn: maps the current tokens ``(B, N)`` int64 (MASK = ``mask_id``) to logits ``(B, N, V)`` with
            ``V <= mask_id`` real codes.
        batch_size: ``B``.
        num_tokens: ``N`` tokens per frame.
        mask_id: id of the MASK token.
        steps: number of MaskGIT iterations (paper: 25).
        temperature: sampling temperature (paper: 2.0 at scale, 1.0 on CoinRun); 0 means argmax.
        choice_temperature: scale of annealed Gumbel noise on the confidences (0: pure confidence order).
        generator: RNG for sampling and noise, on ``device``.
        device: device of the token tensors.
        trace: if given, the tokens after every step are appended to it (for debugging and tests).

    Returns:
        ``(B, N)`` int64 tokens in ``[0, V)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps=}")
    tokens = torch.full((batch_size, num_tokens), mask_id, dtype=torch.long, device=device)
    num_masked = num_tokens
    for step in range(steps):
        progress = (step + 1) / steps
        # Keep at least one token masked until the last step, reveal at least one per step.
        target_masked = min(math.floor(num_tokens * cosine_schedule(progress)), num_masked - 1)
        target_masked = 0 if step == steps - 1 else max(target_masked, 0)
        num_reveal = num_masked - target_masked
        if num_reveal <= 0:
            continue

        logits = logits_fn(tokens).float()
        if temperature > 0:
            log_probs = torch.log_softmax(logits / temperature, dim=-1)
            flat = rearrange(log_probs.exp(), "b n v -> (b n) v")
            sampled = rearrange(torch.multinomial(flat, 1, generator=generator), "(b n) 1 -> b n", b=batch_size)
            confidence = log_probs.gather(-1, sampled[..., None])[..., 0]
        else:
            # The argmax's log-probability is its logit minus the log-partition: no (B, N, V) log-softmax needed.
            best, sampled = logits.max(dim=-1)
            confidence = best - torch.logsumexp(logits, dim=-1)
        if choice_temperature > 0:
            uniform = torch.rand(confidence.shape, generator=generator, device=confidence.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0)).clamp(min=1e-20))
            confidence = confidence + choice_temperature * (1.0 - progress) * gumbel

        still_masked = tokens == mask_id
        # Revealed tokens are final: they are never candidates again.
        confidence = confidence.masked_fill(~still_masked, -math.inf)
        chosen = confidence.topk(num_reveal, dim=-1).indices
        reveal = torch.zeros_like(still_masked).scatter_(1, chosen, True) & still_masked
        tokens = torch.where(reveal, sampled, tokens)
        num_masked = target_masked
        if trace is not None:
            trace.append(tokens.clone())
    return tokens


@torch.no_grad()
def sample_next_frame(
    dynamics: DynamicsModel,
    tokens: Tensor,
    actions: Tensor,
    next_action: Tensor,
    *,
    steps: int = 25,
    temperature: float = 1.0,
    choice_temperature: float = 0.0,
    generator: torch.Generator | None = None,
    trace: list[Tensor] | None = None,
) -> Tensor:
    """Sample frame ``T`` given frames ``0 .. T-1``, recomputing the whole history at every step (no cache).

    Args:
        dynamics: the dynamics model (use ``eval()`` mode).
        tokens: ``(B, T, h, w)`` int64 past frames.
        actions: ``(B, T - 1)`` int64 past transitions.
        next_action: ``(B,)`` int64 latent action ``a_{T-1}`` leading into the new frame.
        steps: MaskGIT steps.
        temperature: sampling temperature (0 = argmax).
        choice_temperature: annealed Gumbel noise on confidences.
        generator: RNG on the model's device.
        trace: optional list collecting the tokens ``(B, h*w)`` after every step.

    Returns:
        ``(B, h, w)`` int64 tokens of the new frame.
    """
    b, _, h, w = tokens.shape
    all_actions = torch.cat([actions, next_action[:, None]], dim=1)

    def logits_fn(current: Tensor) -> Tensor:
        frame = rearrange(current, "b (h w) -> b 1 h w", h=h)
        logits = dynamics.logits(torch.cat([tokens, frame], dim=1), all_actions)
        return rearrange(logits[:, -1], "b h w v -> b (h w) v")

    flat = maskgit_sample(
        logits_fn,
        b,
        h * w,
        dynamics.mask_id,
        steps=steps,
        temperature=temperature,
        choice_temperature=choice_temperature,
        generator=generator,
        device=tokens.device,
        trace=trace,
    )
    return rearrange(flat, "b (h w) -> b h w", h=h)


class MaskGITRollout:
    """Batched, KV-cached, frame-by-frame generation for ``B`` environments.

    Each generated frame costs ``steps`` single-frame passes plus one to cache the result, independent of the
    history length. All envs advance together; an env can begin a new episode at any step (``restart`` in
    :meth:`commit` / :meth:`step`).

    Example:
        >>> rollout = MaskGITRollout(dynamics, steps=25, temperature=1.0)  # doctest: +SKIP
        >>> rollout.reset(prompt_tokens)                                  # (B, T0, h, w)
        >>> next_tokens = rollout.step(actions, generator=gen)             # (B,) -> (B, h, w)

    Args:
        dynamics: the dynamics model (``eval()`` mode).
        steps: MaskGIT steps per frame.
        temperature: sampling temperature (0 = argmax).
        choice_temperature: annealed Gumbel noise on confidences.
    """

    def __init__(
        self, dynamics: DynamicsModel, steps: int = 25, temperature: float = 1.0, choice_temperature: float = 0.0
    ) -> None:
        self.dynamics = dynamics
        self.steps = steps
        self.temperature = temperature
        self.choice_temperature = choice_temperature
        self.cache: DynamicsCache | None = None

    def reset(self, prompt_tokens: Tensor, prompt_actions: Tensor | None = None) -> None:
        """Start every env from a prompt.

        Args:
            prompt_tokens: ``(B, T0, h, w)`` int64 prompt frames (``T0 >= 1``).
            prompt_actions: ``(B, T0 - 1)`` int64 actions between prompt frames (required when ``T0 > 1``).
        """
        b, t0 = prompt_tokens.shape[:2]
        if prompt_actions is None:
            if t0 > 1:
                raise ValueError(f"a prompt of {t0} frames needs prompt_actions of shape ({b}, {t0 - 1})")
            prompt_actions = prompt_tokens.new_empty(b, 0)
        self.cache = self.dynamics.new_cache(b)
        self.dynamics.append_frames(prompt_tokens, self.dynamics.frame_actions(prompt_actions), self.cache)

    def _require_cache(self) -> DynamicsCache:
        if self.cache is None:
            raise RuntimeError("call reset() before sampling")
        return self.cache

    @torch.no_grad()
    def sample(
        self, actions: Tensor, generator: torch.Generator | None = None, trace: list[Tensor] | None = None
    ) -> Tensor:
        """Sample every env's next frame without committing it to the history.

        Args:
            actions: ``(B,)`` int64 latent action per env.
            generator: RNG on the model's device.
            trace: optional list collecting the tokens ``(B, h*w)`` after every MaskGIT step.

        Returns:
            ``(B, h, w)`` int64 tokens.
        """
        cache = self._require_cache()
        cfg = self.dynamics.config
        h, w = cfg.grid_height, cfg.grid_width

        def logits_fn(current: Tensor) -> Tensor:
            frame = rearrange(current, "b (h w) -> b h w", h=h)
            return rearrange(self.dynamics.next_frame_logits(frame, actions, cache), "b h w v -> b (h w) v")

        flat = maskgit_sample(
            logits_fn,
            actions.shape[0],
            h * w,
            self.dynamics.mask_id,
            steps=self.steps,
            temperature=self.temperature,
            choice_temperature=self.choice_temperature,
            generator=generator,
            device=actions.device,
            trace=trace,
        )
        return rearrange(flat, "b (h w) -> b h w", h=h)

    @torch.no_grad()
    def commit(self, tokens: Tensor, actions: Tensor, restart: Tensor | None = None) -> None:
        """Append one finished frame per env to the history.

        Args:
            tokens: ``(B, h, w)`` int64 frame (sampled, or a new prompt frame for restarting envs).
            actions: ``(B,)`` int64 action that produced it.
            restart: ``(B,)`` bool; these envs forget their history first and ``tokens`` becomes the first frame of
                their new episode (their action is ignored).
        """
        cache = self._require_cache()
        if restart is not None:
            cache.reset(restart)
            actions = torch.where(restart.to(actions.device), NO_ACTION, actions)
        self.dynamics.append_frames(tokens[:, None], actions[:, None], cache)

    @torch.no_grad()
    def step(
        self,
        actions: Tensor,
        generator: torch.Generator | None = None,
        restart: Tensor | None = None,
        restart_tokens: Tensor | None = None,
    ) -> Tensor:
        """Sample and commit the next frame of every env.

        Args:
            actions: ``(B,)`` int64 latent actions.
            generator: RNG on the model's device.
            restart: ``(B,)`` bool envs that start a new episode now instead of stepping (gymnasium "next-step"
                autoreset); they return ``restart_tokens``.
            restart_tokens: ``(B, h, w)`` int64 prompt frames, read where ``restart`` is True.

        Returns:
            ``(B, h, w)`` int64 tokens of each env's new frame.
        """
        tokens = self.sample(actions, generator)
        if restart is not None:
            if restart_tokens is None:
                raise ValueError("restart needs restart_tokens")
            tokens = torch.where(restart[:, None, None].to(tokens.device), restart_tokens, tokens)
        self.commit(tokens, actions, restart)
        return tokens
