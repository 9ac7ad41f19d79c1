"""Flow matching for GE-Sim: noise schedule, training loss and the Euler sampler.

Kept apart from the network (:mod:`genie_env.models.gesim.dit`). Conventions (rectified flow):

* ``x_t = (1 - t) * x0 + t * eps`` with flow time ``t`` in [0, 1] (``t = 1`` is pure noise);
* the network predicts the velocity ``v = eps - x0``;
* memory frames (``cond_mask == 1``) stay clean, get timestep ``sigma_c / (1 + sigma_c)`` with
  ``sigma_c = 1e-4``, and are excluded from the loss.
* ``x0`` on future frames is the DiT's flow target (its config's ``target``): the latents themselves
  (``"latent"``, GE-Sim), or ``residual_scale * (latent - newest memory latent)`` (``"residual"``), mapped
  back by the sampler. Memory frames always enter as latents.

GE-Sim's released sampler is written in EDM form (``sigma`` from 80 to 0.002 on a Karras grid,
``t = sigma / (1 + sigma)``). An Euler step in EDM space with a fixed ``x0`` prediction lands on the same
point as an Euler step in rectified-flow space between the matching ``t`` values, so
:class:`FlowSampler` runs diffusers' ``FlowMatchEulerDiscreteScheduler`` on those ``t`` values and
reproduces it. Differences: the scheduler appends a terminal ``t = 0`` (GE-Sim's last step is a no-op at
``sigma = 0.002``), and the scheduler's own ``use_karras_sigmas`` is not used because it spaces the grid
in ``t`` between the schedule's end points instead of in EDM ``sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange

from genie_env.models.gesim.dit import MultiViewDiT, assemble_inputs

SIGMA_COND = 1e-4
"""EDM noise level GE-Sim gives memory frames."""
MEMORY_TIMESTEP = SIGMA_COND / (1.0 + SIGMA_COND)
"""Flow time fed to the network for memory frames."""


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    # Draw on the generator's device (torch requires it), then move: results do not depend on `device`.
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _frame_mask(cond_mask: torch.Tensor) -> torch.Tensor:
    # (B, T) -> (B, 1, 1, T, 1, 1), broadcastable against (B, V, C, T, H, W) latents.
    return rearrange(cond_mask.float(), "b t -> b 1 1 t 1 1")


def sample_flow_times(
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    scheme: Literal["uniform", "logit_normal"] = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    t_min: float = 1e-3,
) -> torch.Tensor:
    """Samples one training flow time per sample.

    Args:
        batch_size: Number of times ``B``.
        generator: Random generator.
        device: Device of the result.
        scheme: ``"uniform"`` (GE's trainer: ``flow_weighting_scheme: none``) or ``"logit_normal"`` (SD3).
        logit_mean: Mean of the logit-normal.
        logit_std: Standard deviation of the logit-normal.
        t_min: Lower clamp; GE's trainer draws from {0.001, ..., 1}, never exactly 0.

    Returns:
        Flow times ``(B,)`` in ``[t_min, 1]``.

    Raises:
        ValueError: On an unknown scheme.
    """
    if scheme == "uniform":
        t = _uniform((batch_size,), generator, device)
    elif scheme == "logit_normal":
        t = torch.sigmoid(logit_mean + logit_std * randn_tensor((batch_size,), generator=generator, device=device))
    else:
        raise ValueError(f"Unknown flow-time sampling {scheme=}")
    return t.clamp(min=t_min, max=1.0)


def memory_prefix(cond_mask: torch.Tensor) -> int:
    """``M`` when every row of ``cond_mask`` ``(B, T)`` is ``M >= 1`` memory frames then only future ones, else 0."""
    memory = cond_mask.to(torch.bool)
    n = int(memory[0].sum())
    prefix = torch.zeros_like(memory[0])
    prefix[:n] = True
    return n if n < memory.shape[1] and bool((memory == prefix).all()) else 0


def frame_timesteps(t: torch.Tensor, cond_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame network timesteps: ``t`` on future frames, :data:`MEMORY_TIMESTEP` on memory frames.

    Args:
        t: Flow time per sample, ``(B,)``.
        cond_mask: Memory indicator ``(B, T)``.

    Returns:
        Timesteps ``(B, T)`` in the dtype of ``t``.
    """
    memory = cond_mask.to(torch.bool)
    return torch.where(memory, torch.full_like(t[:, None], MEMORY_TIMESTEP), t[:, None].expand(memory.shape))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rectified-flow interpolation ``x_t = (1 - t) * x0 + t * noise``.

    Args:
        x0: Clean latents ``(B, V, C, T, H, W)``.
        noise: Gaussian noise, same shape.
        t: Flow times ``(B, T)`` (per frame) or ``(B,)``.

    Returns:
        Noisy latents, same shape as ``x0``.
    """
    if t.ndim == 1:
        t = t[:, None].expand(x0.shape[0], x0.shape[3])
    t = rearrange(t, "b t -> b 1 1 t 1 1").to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def noise_memory(
    latents: torch.Tensor,
    cond_mask: torch.Tensor,
    *,
    max_strength: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mixes a little noise into memory latents: ``(1 - a) * mem + a * eps``, ``a ~ U(0, max_strength)``.

    GE's trainer does this (``noise_to_first_frame = 0.1``) so the model tolerates the imperfect,
    self-generated memory it sees during autoregressive rollouts. One ``a`` per sample.

    Args:
        latents: Latents ``(B, V, C, T, H, W)``.
        cond_mask: Memory indicator ``(B, T)``; future frames are returned unchanged.
        max_strength: Upper bound of ``a``.
        generator: Random generator.

    Returns:
        Latents with perturbed memory frames.
    """
    batch = latents.shape[0]
    a = max_strength * _uniform((batch,), generator, latents.device)
    eps = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    a = rearrange(a, "b -> b 1 1 1 1 1").to(latents.dtype)
    mixed = (1.0 - a) * latents + a * eps
    return torch.where(_frame_mask(cond_mask).bool(), mixed, latents)


def newest_memory(latents: torch.Tensor, cond_mask: torch.Tensor) -> torch.Tensor:
    """The newest memory latent of every sample: memory frames come first, so it is frame ``n_memory - 1``.

    Args:
        latents: Latents ``(B, V, C, T, H, W)``.
        cond_mask: Memory indicator ``(B, T)`` with at least one leading memory frame per row.

    Returns:
        ``(B, V, C, 1, H, W)``.
    """
    count = cond_mask.to(torch.long).sum(dim=1)
    if bool((count < 1).any()):
        raise ValueError(f"every sample needs at least one memory frame, got counts {count.tolist()}")
    b, v, c, _, h, w = latents.shape
    index = rearrange(count - 1, "b -> b 1 1 1 1 1").expand(b, v, c, 1, h, w)
    return latents.gather(3, index)


def _residual_scale(model: MultiViewDiT) -> float | None:
    # None: the flow carries latents (GE-Sim); else the scale of the residual from the newest memory latent.
    return float(model.config.residual_scale) if model.config.target == "residual" else None


def to_flow_target(model: MultiViewDiT, latents: torch.Tensor, cond_mask: torch.Tensor) -> torch.Tensor:
    """Future frames in the space the DiT's flow carries (see the module notes); memory frames unchanged.

    Args:
        model: The DiT (its config's ``target`` and ``residual_scale``).
        latents: Latents ``(B, V, C, T, H, W)``; the newest memory frame is the residual's anchor.
        cond_mask: Memory indicator ``(B, T)``.
    """
    scale = _residual_scale(model)
    if scale is None:
        return latents
    future = (latents - newest_memory(latents, cond_mask)) * scale
    return torch.where(_frame_mask(cond_mask).bool(), latents, future)


def from_flow_target(
    model: MultiViewDiT, x: torch.Tensor, latents: torch.Tensor, cond_mask: torch.Tensor
) -> torch.Tensor:
    """Inverse of :func:`to_flow_target`: future frames of ``x`` back to latents, memory frames from ``latents``."""
    scale = _residual_scale(model)
    future = x if scale is None else newest_memory(latents, cond_mask) + x / scale
    return torch.where(_frame_mask(cond_mask).bool(), latents, future)


def flow_matching_loss(
    pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, cond_mask: torch.Tensor
) -> torch.Tensor:
    """MSE between predicted and true velocity ``noise - x0``, over future frames only.

    Args:
        pred: Predicted velocity ``(B, V, C, T, H, W)``.
        x0: Clean latents, same shape.
        noise: The noise used to build ``x_t``, same shape.
        cond_mask: Memory indicator ``(B, T)``; memory frames carry no loss.

    Returns:
        Scalar loss, averaged over all future-frame elements.
    """
    future = 1.0 - _frame_mask(cond_mask).to(pred.dtype)
    sq_err = (pred - (noise - x0)).pow(2) * future
    # Normalise by the number of future elements so the loss scale does not depend on the memory length.
    count = (future * torch.ones_like(pred)).sum().clamp(min=1.0)
    return sq_err.sum() / count


def flow_matching_step(
    model: MultiViewDiT,
    latents: torch.Tensor,
    traj: torch.Tensor,
    ray: torch.Tensor,
    cond_mask: torch.Tensor,
    *,
    view_ids: torch.Tensor | None = None,
    task_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    memory_noise: float = 0.1,
    task_dropout: float = 0.06,
    scheme: Literal["uniform", "logit_normal"] = "uniform",
) -> tuple[torch.Tensor, dict[str, float]]:
    """One GE-Sim training forward: sample ``t`` and noise, run the network, return the masked loss.

    Args:
        model: The DiT.
        latents: Clean normalised latents ``(B, V, 16, T, H, W)`` (memory and future frames).
        traj: Trajectory maps ``(B, V, 3, T, H, W)``.
        ray: Ray maps ``(B, V, 6, T, H, W)``.
        cond_mask: Memory indicator ``(B, T)``.
        view_ids: View ids ``(B, V)``; defaults to ``0..V-1``.
        task_ids: Task ids ``(B,)``; ``None`` means the "no task" entry.
        generator: Random generator for every draw (times, noise, memory noise, dropout).
        memory_noise: ``max_strength`` of :func:`noise_memory`; 0 disables it.
        task_dropout: Probability of replacing a task id by the "no task" id (GE: caption dropout 0.06).
        scheme: Flow-time sampling scheme (:func:`sample_flow_times`).

    Returns:
        ``(loss, logs)`` with a differentiable scalar loss and float logs under ``train/``.
    """
    batch, device = latents.shape[0], latents.device
    t = sample_flow_times(batch, generator=generator, device=device, scheme=scheme).to(latents.dtype)
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)

    memory = latents
    if memory_noise > 0:
        memory = noise_memory(latents, cond_mask, max_strength=memory_noise, generator=generator)
    timesteps = frame_timesteps(t, cond_mask)
    # The residual's anchor is the memory as the network sees it (augmented), as it will be in a rollout.
    x0 = to_flow_target(model, torch.where(_frame_mask(cond_mask).bool(), memory, latents), cond_mask)
    # Memory frames enter clean (bar the augmentation); future frames are interpolated towards noise.
    x_t = torch.where(_frame_mask(cond_mask).bool(), memory, add_noise(x0, noise, timesteps))

    if task_ids is not None and task_dropout > 0:
        drop = _uniform((batch,), generator, device) < task_dropout
        task_ids = torch.where(drop, torch.full_like(task_ids, model.null_task_id), task_ids)

    pred = model(assemble_inputs(x_t, traj, ray, cond_mask), timesteps, view_ids=view_ids, task_ids=task_ids).sample
    loss = flow_matching_loss(pred.float(), x0.float(), noise.float(), cond_mask)
    return loss, {"train/loss": loss.item(), "train/t_mean": t.mean().item()}


def karras_flow_times(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> list[float]:
    """GE-Sim's Karras (EDM) noise levels, converted to flow times ``t = sigma / (1 + sigma)``.

    Args:
        num_steps: Number of noise levels.
        sigma_min: Smallest EDM sigma (last level).
        sigma_max: Largest EDM sigma (first level).
        rho: Karras exponent.

    Returns:
        Decreasing flow times, ``num_steps`` values from ``80/81`` to ``0.002/1.002`` by default.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps=}")
    ramp = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return (sigmas / (1.0 + sigmas)).tolist()


def linear_flow_times(num_steps: int) -> list[float]:
    """Evenly spaced flow times ``1, 1 - 1/N, ..., 1/N`` (GE-Act's schedule)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps=}")
    return torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64).tolist()


@dataclass
class FlowSampler:
    """Euler sampler for the future frames, holding memory frames clean.

    Attributes:
        num_steps: Number of network evaluations.
        schedule: ``"linear"`` (``t = 1 .. 1/N``) or ``"karras"`` (GE-Sim's EDM grid; GE-Sim uses 15).
        sigma_min: Karras smallest EDM sigma.
        sigma_max: Karras largest EDM sigma.
        rho: Karras exponent.
        scheduler: The diffusers scheduler doing the Euler update (``shift = 1``; schedule passed as sigmas).
    """

    num_steps: int = 4
    schedule: Literal["linear", "karras"] = "linear"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    scheduler: FlowMatchEulerDiscreteScheduler = field(
        default_factory=lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    )

    def flow_times(self) -> list[float]:
        """The decreasing flow times at which the network is evaluated."""
        if self.schedule == "linear":
            return linear_flow_times(self.num_steps)
        if self.schedule == "karras":
            return karras_flow_times(self.num_steps, self.sigma_min, self.sigma_max, self.rho)
        raise ValueError(f"Unknown {self.schedule=}")

    @torch.no_grad()
    def __call__(
        self,
        model: MultiViewDiT,
        latents: torch.Tensor,
        traj: torch.Tensor,
        ray: torch.Tensor,
        cond_mask: torch.Tensor,
        *,
        view_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Samples the future latent frames.

        Args:
            model: The DiT (put it in eval mode first).
            latents: Normalised latents ``(B, V, 16, T, H, W)``; memory frames are read, future frames ignored.
            traj: Trajectory maps ``(B, V, 3, T, H, W)``.
            ray: Ray maps ``(B, V, 6, T, H, W)``.
            cond_mask: Memory indicator ``(B, T)``.
            view_ids: View ids ``(B, V)``; defaults to ``0..V-1``.
            task_ids: Task ids ``(B,)``; ``None`` means the "no task" entry.
            encoder_hidden_states: Optional text context overriding ``task_ids``.
            generator: Random generator for the initial noise (the only random draw).

        Returns:
            Latents ``(B, V, 16, T, H, W)``: memory frames exactly as given, future frames sampled.
        """
        memory_mask = _frame_mask(cond_mask).bool()
        times = self.flow_times()
        self.scheduler.set_timesteps(sigmas=times, device=latents.device)
        self.scheduler.set_begin_index(0)

        # Start at x_{t0} = t0 * eps (the x0 share is unknown), i.e. GE-Sim's sigma_max * eps in EDM scale.
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        x = torch.where(memory_mask, latents, times[0] * noise)
        batch = latents.shape[0]
        conditioning: dict[str, Any] = {
            "view_ids": view_ids,
            "task_ids": task_ids,
            "encoder_hidden_states": encoder_hidden_states,
        }
        n_mem = memory_prefix(cond_mask) if getattr(model, "causal_memory", False) else 0
        if n_mem:
            # The memory's features do not depend on the future frames: compute them once, then step the future
            # frames alone against them.
            mem = slice(None, n_mem)
            conditioning["memory"] = model.encode_memory(
                assemble_inputs(latents[:, :, :, mem], traj[:, :, :, mem], ray[:, :, :, mem], cond_mask[:, mem]),
                frame_timesteps(torch.zeros(batch, device=latents.device, dtype=latents.dtype), cond_mask[:, mem]),
                **conditioning,
            )
        run = slice(n_mem, None)  # the frames the network sees at each step: all, or those after cached memory
        x = x[:, :, :, run]
        for i, step_t in enumerate(self.scheduler.timesteps):
            t = self.scheduler.sigmas[i].to(device=latents.device, dtype=latents.dtype).expand(batch)
            velocity = model(
                assemble_inputs(x, traj[:, :, :, run], ray[:, :, :, run], cond_mask[:, run]),
                frame_timesteps(t, cond_mask[:, run]),
                **conditioning,
            ).sample
            x = self.scheduler.step(velocity, step_t, x).prev_sample
            # The Euler update also moved the memory frames; put the clean ones back.
            x = torch.where(memory_mask[:, :, :, run], latents[:, :, :, run], x)
        x = torch.cat([latents[:, :, :, :n_mem], x], dim=3)
        return from_flow_target(model, x, latents, cond_mask)
