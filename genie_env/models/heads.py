"""World heads: reward, termination and object-position predictors on generated frames.

A world-model environment renders frames; RL in imagination also needs the reward, the end of an episode and, for
Fetch Push, where the block is. :class:`WorldHeads` reads them off a *transition*: the views at ``t - 1`` and at
``t`` (the reward and ``terminated`` of a recorded row arrive with frame ``t``, :mod:`genie_env.data.lerobot`),
plus the proprioceptive state and the goal at ``t`` where the task has them.

Network: every view's ``(prev, current)`` pair plus their difference (9 channels; the difference makes small
changes, such as a score ticking over, easy to see from the first step) goes through one shared conv trunk
(stride-2 stages), pooled into a global average (what is there), a global maximum (small local events) and a
spatial soft-argmax per channel (where it is); the per-view features are concatenated in view order, joined with
small MLP embeddings of the normalised state and goal, and a shared MLP feeds up to three heads:

* ``reward``: a classification over the distinct reward values seen in training (``reward_values``); the
  expected reward is ``sum(probs * reward_values)``;
* ``termination``: one logit, ``P(terminated at t)``;
* ``object``: the object position at ``t``, regressed in normalised units (``(x - object_mean) / object_std``);
  :meth:`WorldHeads.predict` returns it in the data's units (metres, robot base frame for Fetch).

Normalisation statistics and reward values come from the training data and live in the config (``config.json``),
so ``save_pretrained`` / ``from_pretrained`` restore them exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from genie_env.checkpoint import atomic_directory, load_model, load_model_dir


@dataclass
class HeadsOutput:
    """Raw outputs of :meth:`WorldHeads.forward` (``None`` for a head the model does not have).

    Attributes:
        reward_logits: ``(B, K)`` logits over ``config.reward_values``.
        termination_logits: ``(B,)`` logit of ``terminated``.
        object: ``(B, object_dim)`` object position, *normalised* (``(x - object_mean) / object_std``).
    """

    reward_logits: Tensor | None = None
    termination_logits: Tensor | None = None
    object: Tensor | None = None


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


def _check_stats(name: str, mean: Sequence[float], std: Sequence[float], dim: int) -> None:
    if dim == 0:
        if len(mean) or len(std):
            raise ValueError(f"{name}_mean/{name}_std must be empty when {name}_dim=0, got {mean}, {std}")
        return
    if mean and len(mean) != dim:
        raise ValueError(f"{name}_mean needs {dim} values ({name}_dim), got {len(mean)}: {list(mean)}")
    if std and len(std) != dim:
        raise ValueError(f"{name}_std needs {dim} values ({name}_dim), got {len(std)}: {list(std)}")
    if std and not all(s > 0 for s in std):
        raise ValueError(f"{name}_std must be all > 0, got {list(std)}")


class SpatialSoftArgmax(nn.Module):
    """Feature maps ``(N, C, h, w)`` -> expected ``(x, y)`` of each channel's softmax, ``(N, 2C)`` in ``[-1, 1]``."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        attn = x.flatten(2).softmax(dim=-1).view(n, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=attn.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=attn.dtype)
        ex = (attn.sum(dim=2) * xs).sum(dim=-1)
        ey = (attn.sum(dim=3) * ys).sum(dim=-1)
        return torch.cat([ex, ey], dim=1)


class WorldHeads(ModelMixin, ConfigMixin):
    """Reward / termination / object-position heads on a transition ``(frames at t - 1, frames at t)``.

    Args:
        num_views: cameras ``V`` per sample, in the order of ``cameras``.
        image_size: square frame side ``H = W``.
        state_dim: proprioceptive state size (0: no state input).
        goal_dim: goal size (0: no goal input).
        reward_values: the distinct rewards seen in training, strictly increasing (empty: no reward head).
        termination: whether there is a termination head.
        object_dim: object-position size (0: no object head; Fetch: 3).
        channels: output channels of the conv trunk's stride-2 stages.
        hidden: width of the per-view features, the state/goal embeddings and the shared MLP.
        state_mean: per-entry mean of the training states (empty: 0).
        state_std: per-entry standard deviation of the training states (empty: 1).
        goal_mean: as ``state_mean``, for the goal.
        goal_std: as ``state_std``, for the goal.
        object_mean: as ``state_mean``, for the object position (the regression target).
        object_std: as ``state_std``, for the object position.
        reward_counts: training samples per reward value (bookkeeping: class weights and priors).
        termination_rate: share of training samples with ``terminated`` (bookkeeping).
        cameras: camera names in view order (bookkeeping, e.g. ``["front", "side", "hand"]``).
        state_key: dataset feature the state came from (bookkeeping, e.g. ``"observation.state"``).
        goal_key: dataset feature the goal came from (bookkeeping, e.g. ``"observation.goal"``).
        object_key: dataset feature of the object target (bookkeeping, e.g. ``"observation.object"``).
    """

    @register_to_config
    def __init__(
        self,
        num_views: int = 1,
        image_size: int = 64,
        state_dim: int = 0,
        goal_dim: int = 0,
        reward_values: Sequence[float] = (),
        termination: bool = False,
        object_dim: int = 0,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        state_mean: Sequence[float] = (),
        state_std: Sequence[float] = (),
        goal_mean: Sequence[float] = (),
        goal_std: Sequence[float] = (),
        object_mean: Sequence[float] = (),
        object_std: Sequence[float] = (),
        reward_counts: Sequence[int] = (),
        termination_rate: float = 0.0,
        cameras: Sequence[str] = (),
        state_key: str = "",
        goal_key: str = "",
        object_key: str = "",
    ) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if image_size < 2 ** len(channels):
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} stride-2 stages")
        for name, dim in (("state_dim", state_dim), ("goal_dim", goal_dim), ("object_dim", object_dim)):
            if dim < 0:
                raise ValueError(f"{name} must be >= 0, got {dim}")
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {list(channels)}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        values = [float(v) for v in reward_values]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"reward_values must be strictly increasing, got {values}")
        if reward_counts and len(reward_counts) != len(values):
            raise ValueError(f"reward_counts needs one count per reward value ({len(values)}), got {reward_counts}")
        if cameras and len(cameras) != num_views:
            raise ValueError(f"cameras names {len(cameras)} views but num_views={num_views}: {list(cameras)}")
        _check_stats("state", state_mean, state_std, state_dim)
        _check_stats("goal", goal_mean, goal_std, goal_dim)
        _check_stats("object", object_mean, object_std, object_dim)
        if not (values or termination or object_dim):
            raise ValueError("WorldHeads needs at least one head: reward_values, termination or object_dim")

        # Normalisation constants (``<name>_loc`` / ``<name>_scale``) follow the config, never saved with the weights.
        def stats(mean: Sequence[float], std: Sequence[float], dim: int) -> tuple[Tensor, Tensor]:
            m = torch.tensor(list(mean), dtype=torch.float32) if mean else torch.zeros(dim)
            s = torch.tensor(list(std), dtype=torch.float32) if std else torch.ones(dim)
            return m, s

        for name, mean, std, dim in (
            ("state", state_mean, state_std, state_dim),
            ("goal", goal_mean, goal_std, goal_dim),
            ("object", object_mean, object_std, object_dim),
        ):
            m, s = stats(mean, std, dim)
            self.register_buffer(f"{name}_loc", m, persistent=False)
            self.register_buffer(f"{name}_scale", s, persistent=False)
        self.register_buffer("reward_table", torch.tensor(values, dtype=torch.float32), persistent=False)

        # 1. Shared per-view trunk on (prev, current, current - prev) stacked as 9 channels.
        layers: list[nn.Module] = []
        c_in = 9
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 4, stride=2, padding=1),
                nn.GroupNorm(_groups(c), c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(_groups(c), c),
                nn.SiLU(),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        self.keypoints = SpatialSoftArgmax()
        self.view_proj = nn.Sequential(nn.Linear(4 * c_in, hidden), nn.SiLU())

        # 2. State / goal embeddings and the shared MLP.
        self.state_embed = nn.Sequential(nn.Linear(state_dim, hidden), nn.SiLU()) if state_dim else None
        self.goal_embed = nn.Sequential(nn.Linear(goal_dim, hidden), nn.SiLU()) if goal_dim else None
        joint = hidden * (num_views + (state_dim > 0) + (goal_dim > 0))
        self.mlp = nn.Sequential(nn.Linear(joint, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())

        # 3. Heads.
        self.reward_head = nn.Linear(hidden, len(values)) if values else None
        self.termination_head = nn.Linear(hidden, 1) if termination else None
        self.object_head = nn.Linear(hidden, object_dim) if object_dim else None

    # --- input checks ------------------------------------------------------------------------------------

    def _check_frames(self, name: str, x: object) -> Tensor:
        cfg = self.config
        expected = f"(B, {cfg.num_views}, 3, {cfg.image_size}, {cfg.image_size})"
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(
                f"{name} must be float in [-1, 1], got dtype {x.dtype} (convert uint8 images with x / 127.5 - 1)"
            )
        if x.ndim != 5 or tuple(x.shape[1:]) != (cfg.num_views, 3, cfg.image_size, cfg.image_size):
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
        return x

    def _check_vector(self, name: str, x: object, dim: int, batch: int) -> Tensor | None:
        if dim == 0:
            if x is not None:
                raise ValueError(f"this model takes no {name} ({name}_dim=0), but a {name} was given")
            return None
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a float tensor of shape ({batch}, {dim}) ({name}_dim={dim}), got {x!r}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got dtype {x.dtype}")
        if tuple(x.shape) != (batch, dim):
            raise ValueError(f"{name} must have shape ({batch}, {dim}) ({name}_dim={dim}), got {tuple(x.shape)}")
        return x

    # --- forward -----------------------------------------------------------------------------------------

    def forward(
        self,
        prev_frames: Tensor,
        frames: Tensor,
        state: Tensor | None = None,
        goal: Tensor | None = None,
    ) -> HeadsOutput:
        """Raw head outputs for a batch of transitions.

        Args:
            prev_frames: ``(B, V, 3, H, W)`` float in ``[-1, 1]``: every view at ``t - 1``.
            frames: ``(B, V, 3, H, W)`` float in ``[-1, 1]``: every view at ``t``.
            state: ``(B, state_dim)`` state at ``t`` in data units (required iff ``state_dim > 0``).
            goal: ``(B, goal_dim)`` goal in data units (required iff ``goal_dim > 0``).

        Returns:
            :class:`HeadsOutput` with ``reward_logits (B, K)``, ``termination_logits (B,)`` and normalised
            ``object (B, object_dim)`` (``None`` for heads the model does not have).

        Raises:
            ValueError: Naming the argument, for a wrong type, dtype or shape.
        """
        cfg = self.config
        prev_frames = self._check_frames("prev_frames", prev_frames)
        frames = self._check_frames("frames", frames)
        if prev_frames.shape != frames.shape:
            raise ValueError(
                f"prev_frames and frames must have the same shape, got {tuple(prev_frames.shape)} and "
                f"{tuple(frames.shape)}"
            )
        b, v = frames.shape[:2]
        state = self._check_vector("state", state, cfg.state_dim, b)
        goal = self._check_vector("goal", goal, cfg.goal_dim, b)

        dtype = self.view_proj[0].weight.dtype
        pair = torch.cat([prev_frames, frames, frames - prev_frames], dim=2).flatten(0, 1).to(dtype)  # (B*V, 9, H, W)
        fmap = self.trunk(pair)
        pooled = [fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3)), self.keypoints(fmap)]
        per_view = self.view_proj(torch.cat(pooled, dim=1))
        parts = [per_view.view(b, v * per_view.shape[-1])]
        if self.state_embed is not None and state is not None:
            parts.append(self.state_embed(((state - self.state_loc) / self.state_scale).to(dtype)))
        if self.goal_embed is not None and goal is not None:
            parts.append(self.goal_embed(((goal - self.goal_loc) / self.goal_scale).to(dtype)))
        h = self.mlp(torch.cat(parts, dim=1))
        return HeadsOutput(
            reward_logits=self.reward_head(h) if self.reward_head is not None else None,
            termination_logits=self.termination_head(h).squeeze(-1) if self.termination_head is not None else None,
            object=self.object_head(h) if self.object_head is not None else None,
        )

    # --- conveniences ------------------------------------------------------------------------------------

    def normalize_object(self, obj: Tensor) -> Tensor:
        """Object positions ``(..., object_dim)`` in data units -> normalised regression targets."""
        return (obj - self.object_loc) / self.object_scale

    def denormalize_object(self, obj: Tensor) -> Tensor:
        """Normalised object positions ``(..., object_dim)`` -> data units (metres for Fetch)."""
        return obj * self.object_scale + self.object_loc

    def reward_class(self, reward: Tensor) -> Tensor:
        """Rewards ``(B,)`` -> class indices ``(B,)`` int64 (the nearest of ``reward_values``)."""
        return (reward.float()[:, None] - self.reward_table).abs().argmin(dim=1)

    @torch.no_grad()
    def predict(
        self,
        prev_frames: Tensor,
        frames: Tensor,
        state: Tensor | None = None,
        goal: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Rewards, termination probabilities and object positions for a batch of transitions (no gradients).

        Takes the arguments of :meth:`forward`. Returns only the keys of heads the model has:

        * ``reward_probs`` ``(B, K)``: probabilities over ``config.reward_values``;
        * ``reward_mean`` ``(B,)``: the expected reward, ``sum(reward_probs * reward_values)``;
        * ``termination_prob`` ``(B,)``: ``P(terminated)``;
        * ``object`` ``(B, object_dim)``: object position in data units (metres for Fetch).

        Raises:
            ValueError: As :meth:`forward`, and for frames outside ``[-1, 1]`` (e.g. ``[0, 255]`` values).
        """
        for name, x in (("prev_frames", prev_frames), ("frames", frames)):
            x = self._check_frames(name, x)
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.001 or hi > 1.001:
                raise ValueError(f"{name} must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
        out = self(prev_frames, frames, state, goal)
        result: dict[str, Tensor] = {}
        if out.reward_logits is not None:
            probs = out.reward_logits.float().softmax(dim=-1)
            result["reward_probs"] = probs
            result["reward_mean"] = probs @ self.reward_table
        if out.termination_logits is not None:
            result["termination_prob"] = torch.sigmoid(out.termination_logits.float())
        if out.object is not None:
            result["object"] = self.denormalize_object(out.object.float())
        return result


HEADS_DIR = "heads"
"""Folder of the heads inside a world-model bundle (optional: a bundle without it has no learned rewards)."""


def add_bundle_heads(bundle: str | os.PathLike[str], heads_run: str | os.PathLike[str]) -> Path:
    """Copies the heads of a ``genie-env train heads`` run (latest checkpoint, EMA weights when present) into
    ``bundle/heads`` (written atomically, replacing any heads there); returns that folder."""
    heads = load_model(heads_run, "heads", WorldHeads)
    with atomic_directory(Path(bundle) / HEADS_DIR) as tmp:
        heads.save_pretrained(tmp)
    return Path(bundle) / HEADS_DIR


def load_bundle_heads(bundle: str | os.PathLike[str]) -> WorldHeads | None:
    """The heads shipped in a bundle directory (``heads/``), or ``None`` if it has none.

    Raises:
        CheckpointError: Naming the path, if ``heads/`` exists but is incomplete or corrupt.
    """
    folder = Path(bundle) / HEADS_DIR
    return load_model_dir(folder, WorldHeads) if folder.is_dir() else None
