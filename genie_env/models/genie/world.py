"""The Genie world model as one object: tokenizer + latent action model + MaskGIT dynamics, saved as a bundle.

:class:`GenieWorldModel` is what environments, players and the evaluator use: it checks that the three networks
agree (vocabulary, action count, token grid, frame size), renders latent-action-driven rollouts from real prompt
frames, and reads/writes a *bundle* directory (see :mod:`genie_env.models.bundle`)::

    world_model.json   {"type": "genie", "genie_env_version": ..., "sampling": {"maskgit_steps": 25,
                        "temperature": 1.0}, "provenance": {...}}
    tokenizer/         VideoTokenizer.save_pretrained
    lam/               LatentActionModel.save_pretrained
    dynamics/          DynamicsModel.save_pretrained

Build a bundle from three training runs with :func:`assemble_genie_bundle` (EMA weights preferred)::

    assemble_genie_bundle("runs/tok", "runs/lam", "runs/dyn", "bundles/boxing", sampling={"maskgit_steps": 10})
    world = GenieWorldModel.from_pretrained("bundles/boxing", device="cuda")
    frames = world.rollout(prompt, actions, generator=torch.Generator("cuda").manual_seed(0))  # (B, N, 3, H, W)

Every method takes and returns batched torch tensors; frames are float in ``[-1, 1]``, ``(B, T, 3, H, W)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genie_env.checkpoint import CheckpointError, load_meta, load_model, resolve_checkpoint
from genie_env.models.bundle import load_bundle_model, read_bundle_info, save_bundle
from genie_env.models.genie.dynamics import DynamicsModel
from genie_env.models.genie.lam import LatentActionModel
from genie_env.models.genie.maskgit import MaskGITRollout
from genie_env.models.genie.tokenizer import VideoTokenizer

BUNDLE_TYPE = "genie"
DEFAULT_SAMPLING: dict[str, Any] = {"maskgit_steps": 25, "temperature": 1.0}
"""The paper's 25 MaskGIT steps, at its CoinRun temperature (it uses 2.0 only for the 10B model)."""

# Folder name in the bundle -> class.
_PARTS: dict[str, type[nn.Module]] = {"tokenizer": VideoTokenizer, "lam": LatentActionModel, "dynamics": DynamicsModel}


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"maskgit_steps must be an integer >= 1, got {steps!r}")
    return steps


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = argmax), got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    return float(temperature)


def _check_sampling(sampling: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fills in :data:`DEFAULT_SAMPLING` and validates ``{"maskgit_steps", "temperature"}``."""
    sampling = dict(sampling or {})
    unknown = set(sampling) - set(DEFAULT_SAMPLING)
    if unknown:
        raise ValueError(f"unknown sampling keys {sorted(unknown)}; expected a subset of {sorted(DEFAULT_SAMPLING)}")
    merged = {**DEFAULT_SAMPLING, **sampling}
    return {
        "maskgit_steps": _check_steps(merged["maskgit_steps"]),
        "temperature": _check_temperature(merged["temperature"]),
    }


def check_compatible(tokenizer: VideoTokenizer, lam: LatentActionModel, dynamics: DynamicsModel) -> None:
    """Raises ``ValueError`` listing every disagreement between the three networks' configs.

    The dynamics model must use the tokenizer's codebook and token grid and the LAM's action vocabulary, and the
    LAM must read frames of the tokenizer's size.
    """
    tok, act, dyn = tokenizer.config, lam.config, dynamics.config
    grid = (tok.image_height // tok.patch_size, tok.image_width // tok.patch_size)
    checks = [
        ("dynamics codebook_size", dyn.codebook_size, "tokenizer codebook_size", tok.codebook_size),
        ("dynamics num_actions", dyn.num_actions, "lam num_actions", act.num_actions),
        ("dynamics grid (h, w)", (dyn.grid_height, dyn.grid_width), "tokenizer grid (H/p, W/p)", grid),
        (
            "lam frames (C, H, W)",
            (act.in_channels, act.image_height, act.image_width),
            "tokenizer frames (C, H, W)",
            (tok.in_channels, tok.image_height, tok.image_width),
        ),
    ]
    problems = [f"{a} = {va} but {b} = {vb}" for a, va, b, vb in checks if va != vb]
    if problems:
        raise ValueError("tokenizer, LAM and dynamics model do not fit together: " + "; ".join(problems))


class GenieWorldModel(nn.Module):
    """Tokenizer + latent action model + dynamics model, with the sampling settings they were tuned for.

    Args:
        tokenizer: video tokenizer (frames <-> token ids).
        lam: latent action model (frames -> latent action ids).
        dynamics: MaskGIT dynamics model (tokens + actions -> next tokens).
        maskgit_steps: default MaskGIT steps per generated frame.
        temperature: default sampling temperature (0 = argmax).
        provenance: free-form JSON-serialisable record of where the networks came from.

    Raises:
        ValueError: If the networks do not fit together (see :func:`check_compatible`) or a setting is invalid.
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        lam: LatentActionModel,
        dynamics: DynamicsModel,
        *,
        maskgit_steps: int = DEFAULT_SAMPLING["maskgit_steps"],
        temperature: float = DEFAULT_SAMPLING["temperature"],
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_compatible(tokenizer, lam, dynamics)
        self.tokenizer = tokenizer
        self.lam = lam
        self.dynamics = dynamics
        self.maskgit_steps = _check_steps(maskgit_steps)
        self.temperature = _check_temperature(temperature)
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.eval()

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.tokenizer.parameters()).device

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the frames the networks read and write."""
        cfg = self.tokenizer.config
        return (cfg.in_channels, cfg.image_height, cfg.image_width)

    @property
    def num_actions(self) -> int:
        """Size ``|A|`` of the latent action vocabulary."""
        return int(self.lam.config.num_actions)

    @property
    def codebook_size(self) -> int:
        """Number of tokenizer codes."""
        return int(self.tokenizer.config.codebook_size)

    @property
    def sampling(self) -> dict[str, Any]:
        """The default sampling settings, as stored in ``world_model.json``."""
        return {"maskgit_steps": self.maskgit_steps, "temperature": self.temperature}

    # -- bundle I/O ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> GenieWorldModel:
        """Loads a bundle directory written by :meth:`save_pretrained` or :func:`assemble_genie_bundle`.

        Args:
            path: Bundle directory.
            device: Where to put the weights.

        Raises:
            CheckpointError: Naming the path, if ``world_model.json`` or a network folder is missing or corrupt, or
                the bundle is not a Genie bundle.
            ValueError: If the three networks do not fit together.
        """
        root = Path(path)
        info = read_bundle_info(root)
        if info["type"] != BUNDLE_TYPE:
            raise CheckpointError(f"{root} holds a {info['type']!r} world model, expected {BUNDLE_TYPE!r}")
        sampling = info.get("sampling", {})
        if not isinstance(sampling, dict):
            raise CheckpointError(f"{root}/world_model.json: 'sampling' must be an object, got {sampling!r}")
        try:
            sampling = _check_sampling(sampling)
        except ValueError as exc:
            raise CheckpointError(f"{root}/world_model.json: {exc}") from exc
        provenance = info.get("provenance") or {}
        if not isinstance(provenance, dict):
            raise CheckpointError(f"{root}/world_model.json: 'provenance' must be an object, got {provenance!r}")
        parts = {name: load_bundle_model(root, name, part) for name, part in _PARTS.items()}
        model = cls(
            parts["tokenizer"],  # type: ignore[arg-type]
            parts["lam"],  # type: ignore[arg-type]
            parts["dynamics"],  # type: ignore[arg-type]
            **sampling,
            provenance=provenance,
        )
        model.to(device)
        return model

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Writes the bundle atomically (replacing any bundle at ``path``); returns the final path."""
        info = {"type": BUNDLE_TYPE, "sampling": self.sampling, "provenance": self.provenance}
        return save_bundle(path, {"tokenizer": self.tokenizer, "lam": self.lam, "dynamics": self.dynamics}, info)

    # -- validation ---------------------------------------------------------------------------------------------

    def _check_frames(self, frames: Tensor, name: str, min_frames: int = 1) -> None:
        """Frames must be float ``(B, T >= min_frames, C, H, W)`` in ``[-1, 1]`` on the model's device."""
        c, h, w = self.frame_shape
        if not isinstance(frames, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
        if not frames.is_floating_point():
            raise ValueError(
                f"{name} must be float in [-1, 1], got dtype {frames.dtype} (convert uint8 with x / 127.5 - 1)"
            )
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (c, h, w) or frames.shape[1] < min_frames:
            raise ValueError(f"{name} must be (B, T>={min_frames}, {c}, {h}, {w}), got {tuple(frames.shape)}")
        if frames.device != self.device:
            raise ValueError(f"{name} is on {frames.device}, the model on {self.device}")
        # A [0, 1] or [0, 255] input would silently give garbage tokens; a small tolerance allows round-off.
        lo, hi = frames.aminmax()
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"{name} must lie in [-1, 1], got values in [{lo.item():.3g}, {hi.item():.3g}]")

    def _check_actions(self, actions: Tensor, name: str, shape: tuple[int, int]) -> Tensor:
        """Integer ``shape`` tensor of ids in ``[0, num_actions)`` on the model's device -> int64."""
        if not isinstance(actions, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(actions).__name__}")
        if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer latent action ids (int64), got dtype {actions.dtype}")
        if tuple(actions.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(actions.shape)}")
        if actions.device != self.device:
            raise ValueError(f"{name} is on {actions.device}, the model on {self.device}")
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(
                f"{name} must lie in [0, {self.num_actions}), got values in "
                f"[{actions.min().item()}, {actions.max().item()}]"
            )
        return actions.long()

    # -- the three networks -------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """Token ids ``(B, T, h, w)`` int64 of frames ``(B, T, C, H, W)`` in ``[-1, 1]``."""
        self._check_frames(frames, "frames")
        return self.tokenizer.encode(frames)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """Frames ``(B, T, C, H, W)`` in ``[-1, 1]`` of token ids ``(B, T, h, w)`` int64 in ``[0, codebook_size)``."""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integer token ids (int64), got dtype {ids.dtype}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(
                f"ids must lie in [0, {self.codebook_size}), got values in [{ids.min().item()}, {ids.max().item()}]"
            )
        return self.tokenizer.decode(ids.long())

    @torch.no_grad()
    def infer_actions(self, frames: Tensor) -> Tensor:
        """Latent actions ``(B, T - 1)`` int64 of frames ``(B, T >= 2, C, H, W)``; entry t explains x_t -> x_t+1."""
        self._check_frames(frames, "frames", min_frames=2)
        return self.lam.infer_actions(frames)

    # -- generation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def rollout(
        self,
        prompt_frames: Tensor,
        actions: Tensor,
        *,
        prompt_actions: Tensor | None = None,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Generate ``N`` frames autoregressively from ``P`` real prompt frames, driven by latent actions.

        The prompt is tokenised, its own transitions get latent actions from the LAM (unless ``prompt_actions`` is
        given), and then each new frame is sampled with KV-cached MaskGIT and rendered with the tokenizer's cached
        decoder, whose cache is first primed with the prompt tokens so that frame ``P`` is decoded with the same
        history it would have had in a full-clip :meth:`decode`.

        Args:
            prompt_frames: ``(B, P, C, H, W)`` float in ``[-1, 1]``, ``P >= 1``.
            actions: ``(B, N)`` int64 latent actions; ``actions[:, 0]`` leads from the last prompt frame to the first
                generated frame.
            prompt_actions: ``(B, P - 1)`` int64 latent actions between the prompt frames (default: LAM-inferred).
            steps: MaskGIT steps per frame (default: the bundle's ``maskgit_steps``).
            temperature: sampling temperature, 0 = argmax (default: the bundle's).
            generator: RNG on the model's device; a fixed seed gives a fixed rollout.
            on_frame: called with the index ``n`` after each generated frame (progress bars).

        Returns:
            ``(B, N, C, H, W)`` generated frames in ``[-1, 1]``.
        """
        self._check_frames(prompt_frames, "prompt_frames")
        b, p = prompt_frames.shape[:2]
        if not isinstance(actions, Tensor) or actions.ndim != 2 or actions.shape[0] != b or actions.shape[1] < 1:
            shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
            raise ValueError(f"actions must be ({b}, N>=1) latent action ids for a batch of {b} prompts, got {shape}")
        actions = self._check_actions(actions, "actions", (b, actions.shape[1]))
        steps = self.maskgit_steps if steps is None else _check_steps(steps)
        temperature = self.temperature if temperature is None else _check_temperature(temperature)
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {self.device}; they must match")

        prompt_tokens = self.tokenizer.encode(prompt_frames)
        if prompt_actions is None:
            # One prompt frame has no transition to explain; the LAM needs at least two.
            no_actions = actions.new_empty(b, 0)
            prompt_actions = self.lam.infer_actions(prompt_frames) if p > 1 else no_actions
        else:
            prompt_actions = self._check_actions(prompt_actions, "prompt_actions", (b, p - 1))

        sampler = MaskGITRollout(self.dynamics, steps=steps, temperature=temperature)
        sampler.reset(prompt_tokens, prompt_actions)
        decode_cache = self.tokenizer.new_decode_cache(b)
        self.tokenizer.decode_step(prompt_tokens, decode_cache)  # output unused: this only fills the cache
        frames = []
        for n in range(actions.shape[1]):
            tokens = sampler.step(actions[:, n], generator=generator)  # (B, h, w)
            frames.append(self.tokenizer.decode_step(tokens[:, None], decode_cache))  # (B, 1, C, H, W)
            if on_frame is not None:
                on_frame(n)
        return torch.cat(frames, dim=1)


def _source(path: str | os.PathLike[str], name: str, prefer_ema: bool) -> dict[str, Any]:
    """Provenance of one network: the resolved checkpoint, the folder read (EMA or not) and the training step."""
    root = resolve_checkpoint(path)
    folder = f"{name}_ema" if prefer_ema and (root / f"{name}_ema").is_dir() else name
    meta = load_meta(root)
    return {"checkpoint": str(root.resolve()), "folder": folder, "step": meta.get("step")}


def assemble_genie_bundle(
    tokenizer_run: str | os.PathLike[str],
    lam_run: str | os.PathLike[str],
    dynamics_run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    sampling: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    prefer_ema: bool = True,
) -> Path:
    """Builds a Genie bundle from three training runs (or checkpoint directories).

    Args:
        tokenizer_run: Run or checkpoint directory holding ``tokenizer/`` (or ``tokenizer_ema/``).
        lam_run: Run or checkpoint directory holding ``lam/``.
        dynamics_run: Run or checkpoint directory holding ``dynamics/``.
        out: Bundle directory to write (replaced atomically if it exists).
        sampling: ``{"maskgit_steps": int, "temperature": float}``; missing keys take :data:`DEFAULT_SAMPLING`.
        provenance: Extra free-form provenance, merged over the recorded source checkpoints.
        prefer_ema: Take each network's EMA weights where its checkpoint has them.

    Returns:
        The bundle path.

    Raises:
        CheckpointError: If a run has no checkpoint or a network is missing or corrupt.
        ValueError: If the networks do not fit together, or ``sampling`` is invalid.
    """
    settings = _check_sampling(sampling)
    tokenizer = load_model(tokenizer_run, "tokenizer", VideoTokenizer, prefer_ema=prefer_ema)
    lam = load_model(lam_run, "lam", LatentActionModel, prefer_ema=prefer_ema)
    dynamics = load_model(dynamics_run, "dynamics", DynamicsModel, prefer_ema=prefer_ema)
    sources = {
        name: _source(run, name, prefer_ema)
        for name, run in (("tokenizer", tokenizer_run), ("lam", lam_run), ("dynamics", dynamics_run))
    }
    world = GenieWorldModel(tokenizer, lam, dynamics, **settings, provenance={**sources, **dict(provenance or {})})
    return world.save_pretrained(out)
