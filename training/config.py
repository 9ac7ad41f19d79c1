"""Typed training configuration: dataclasses, YAML loading and ``--set key=value`` overrides.

A run is configured by a :class:`RunConfig` with three sections::

    train:      # TrainConfig: optimisation, logging, checkpointing
      steps: 1000
      lr: 1.0e-4
    data:       # DataConfig: which recording and which part of it
      path: data/fetch_push
    component:  # the component's own dataclass, e.g. GeSimVAEConfig
      kl_weight: 1.0e-6

Values are resolved in this order, later ones winning: dataclass defaults, the YAML file, ``--set`` overrides
(dotted keys such as ``train.lr=3e-4``), explicit command-line flags. Every value is coerced to its field's
type (``int``, ``float``, ``bool``, ``str``, ``Literal``, ``X | None``, ``tuple``/``list``, nested
dataclasses); an unknown key is an error that names it and lists the valid ones. Library code only ever sees
the dataclasses, never raw dicts or ``argparse.Namespace``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """An invalid configuration key or value; the message names the key."""


# --- sections --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing of one training run (shared by every component).

    Attributes:
        steps: Total optimiser steps (a resumed run continues up to this number).
        batch_size: Samples per step *per process* (the global batch is ``batch_size * num_processes``).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay, applied to matrices and convolution kernels only (not to biases,
            norms or embeddings' 1-D parameters).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Linear warm-up from 0 to ``lr`` over this many steps.
        lr_schedule: ``"constant"`` after warm-up, or ``"cosine"`` decay to ``min_lr_ratio * lr`` at ``steps``
            (cosine depends on ``steps``: resuming with a different ``steps`` changes the remaining schedule).
        min_lr_ratio: Final learning rate of the cosine schedule, relative to ``lr``.
        grad_clip: Maximum global gradient norm; ``0`` disables clipping.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (``accelerate`` autocast; fp16 needs a GPU).
        compile: ``torch.compile`` the component (accelerate's inductor backend): a minute or two of
            compilation, then about 3x faster steps for the Genie transformers on a CPU.
        seed: Seed of the initial weights, the data order and every random draw of the training step.
        log_every: Steps between TensorBoard scalar logs.
        sample_every: Steps between sample images (component hook ``samples``); ``0`` disables them.
        checkpoint_every: Steps between checkpoints (a final one is always written); ``0``: only the final one.
        keep_last: Checkpoints kept on disk (older ones are deleted); ``0`` keeps all.
        ema_decay: Decay of an exponential moving average of the weights, saved as ``<model>_ema``; ``0`` is off.
        num_workers: DataLoader worker processes.
        out_dir: Run directory (``config.yaml``, ``checkpoints/``, ``logs/``).
        init_from: Checkpoint or run directory (its latest checkpoint) whose model weights start a new run
            (fine-tuning): each model loads ``<name>_ema`` when present, else ``<name>``; optimiser, schedule and
            step start afresh. Ignored when resuming (the run's own checkpoint wins). ``""``: random init.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3
    ema_decay: float = 0.0
    num_workers: int = 0
    out_dir: str = "runs/default"
    init_from: str = ""

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "train.steps", self.steps, ">= 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(all(0 <= b < 1 for b in self.betas), "train.betas", self.betas, "in [0, 1)")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0")
        _check(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, ">= 0")
        _check(self.log_every >= 1, "train.log_every", self.log_every, ">= 1")
        _check(self.sample_every >= 0, "train.sample_every", self.sample_every, ">= 0")
        _check(self.checkpoint_every >= 0, "train.checkpoint_every", self.checkpoint_every, ">= 0")
        _check(self.keep_last >= 0, "train.keep_last", self.keep_last, ">= 0")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")


@dataclass
class DataConfig:
    """Which recording a component trains on.

    Attributes:
        path: LeRobot dataset directory (``genie-env collect``).
        episodes: Episode indices to train on (default: all), e.g. to hold some out.
        cameras: Cameras to use, in order (default: all).
        cache_episodes: Decoded episodes kept in memory per worker.
    """

    path: str = ""
    episodes: list[int] | None = None
    cameras: list[str] | None = None
    cache_episodes: int = 64

    def __post_init__(self) -> None:
        _check(self.cache_episodes >= 1, "data.cache_episodes", self.cache_episodes, ">= 1")


@dataclass
class GeSimVAEConfig:
    """The ``gesim-vae`` component: GE-Sim's Wan VAE trained to reconstruct single frames.

    Attributes:
        preset: VAE size (:data:`genie_env.models.gesim.VAE_PRESETS`: ``"tiny"``, ``"small"`` or ``"paper"``).
        resolution: Resize frames to this square size before encoding (``None``: as recorded). Must be a
            multiple of the VAE's spatial factor (8).
        l1_weight: Weight of the mean absolute reconstruction error.
        mse_weight: Weight of the mean squared reconstruction error.
        kl_weight: Weight of the KL term (summed over latent elements, divided by the number of pixel
            values, i.e. the LDM/Wan convention where ``1e-6`` is the usual weight).
        sample_posterior: Decode a posterior sample (else the posterior mean).
    """

    preset: str = "tiny"
    resolution: int | None = None
    l1_weight: float = 1.0
    mse_weight: float = 0.0
    kl_weight: float = 1e-6
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        if self.resolution is not None:
            ok = self.resolution >= 8 and self.resolution % 8 == 0
            _check(ok, "component.resolution", self.resolution, "a positive multiple of 8")
        for name in ("l1_weight", "mse_weight", "kl_weight"):
            _check(getattr(self, name) >= 0, f"component.{name}", getattr(self, name), ">= 0")


@dataclass
class GeSimConfig:
    """The ``gesim`` component: GE-Sim's multi-view DiT, flow matching on latents of a frozen, trained VAE.

    Attributes:
        vae: Trained ``gesim-vae`` run directory (its latest checkpoint) or checkpoint directory (required).
        preset: DiT size (:data:`genie_env.models.gesim.DIT_PRESETS`).
        num_tasks: Task-embedding entries (``None``: the preset's); must exceed the dataset's task ids.
        patch_size: DiT patch ``(1, p, p)`` in latent pixels (``None``: the preset's ``(1, 2, 2)``). Keep a token
            at the same image area when the VAE compresses less: ``(1, 4, 4)`` on the ``fine`` VAE's 16x16
            latents gives the 4x4 tokens per view that ``(1, 2, 2)`` gives on 8x8 ones, at the same cost.
        target: The DiT's flow target (``MultiViewDiT``'s ``target``): ``"latent"`` (GE-Sim) or ``"residual"`` (the
            change from the newest memory latent, times ``residual_scale``); saved in the DiT's config.
        residual_scale: Scale of the residual target (about 1 / its standard deviation).
        memory_attention: ``"full"`` (GE-Sim) or ``"causal"``: memory frames attend only to memory, so samplers
            compute them once per generated frame instead of once per Euler step; saved in the DiT's config.
        n_memory: Memory frames per window (each its own latent frame).
        n_future: Future frames per window; with ``future_encoding="clip"`` 1 or ``4n + 1`` (the causal VAE).
        memory_mode: How memory frames are drawn from the past (GE-Sim trains with ``"random"``).
        max_memory_span: How far back memory may reach (``None``: to the episode start).
        max_future_gap: The newest memory frame lies 1 to this many frames before the future
            (:class:`~genie_env.data.windows.WindowConfig`); above 1 the DiT must take the arm's motion from the
            future frame's trajectory map instead of extrapolating the memory.
        future_encoding: ``"clip"`` (the future chunk is one causal VAE clip, as GE-Sim) or ``"per_frame"``.
        flow_schedule: Flow-time sampling, ``"uniform"`` (GE's trainer) or ``"logit_normal"``.
        memory_noise: Largest share of noise mixed into the memory latents (GE: 0.1; 0 disables).
        task_dropout: Probability of replacing the task by the "no task" entry (GE's caption dropout 0.06).
        max_opening: Gripper opening drawn darkest in the trajectory maps (Fetch: 0.1 m).
        disc_radius_m: Physical radius of the tip disc in the trajectory maps (metres); saved with the bundle.
        sample_steps: Euler steps of the TensorBoard sample rollouts.
        sample_schedule: Flow-time schedule of the sample rollouts, ``"linear"`` or ``"karras"``.
        cache_latents: Keep the VAE posterior of every recorded frame after its first encoding (when every latent
            frame is a single frame: ``n_future == 1`` or per-frame encoding). About 25 kB per frame with 3 views
            at 64x64 (250 MB for 10k frames); training is several times faster on a CPU.
    """

    vae: str = ""
    preset: str = "tiny"
    num_tasks: int | None = None
    patch_size: tuple[int, int, int] | None = None
    target: Literal["latent", "residual"] = "latent"
    residual_scale: float = 4.0
    memory_attention: Literal["full", "causal"] = "full"
    n_memory: int = 4
    n_future: int = 1
    memory_mode: Literal["uniform", "random", "contiguous"] = "random"
    max_memory_span: int | None = None
    max_future_gap: int = 1
    future_encoding: Literal["clip", "per_frame"] = "clip"
    flow_schedule: Literal["uniform", "logit_normal"] = "uniform"
    memory_noise: float = 0.1
    task_dropout: float = 0.06
    max_opening: float = 0.1
    disc_radius_m: float = 0.03
    sample_steps: int = 8
    sample_schedule: Literal["linear", "karras"] = "linear"
    cache_latents: bool = True

    def __post_init__(self) -> None:
        _check(self.n_memory >= 1, "component.n_memory", self.n_memory, ">= 1")
        _check(self.n_future >= 1, "component.n_future", self.n_future, ">= 1")
        _check(self.max_future_gap >= 1, "component.max_future_gap", self.max_future_gap, ">= 1")
        _check(self.num_tasks is None or self.num_tasks >= 1, "component.num_tasks", self.num_tasks, ">= 1")
        ok = self.patch_size is None or (self.patch_size[0] == 1 and min(self.patch_size) >= 1)
        _check(ok, "component.patch_size", self.patch_size, "(1, p_h, p_w) with p_h, p_w >= 1")
        _check(self.residual_scale > 0, "component.residual_scale", self.residual_scale, "> 0")
        _check(0 <= self.memory_noise <= 1, "component.memory_noise", self.memory_noise, "in [0, 1]")
        _check(0 <= self.task_dropout <= 1, "component.task_dropout", self.task_dropout, "in [0, 1]")
        _check(self.max_opening > 0, "component.max_opening", self.max_opening, "> 0")
        _check(self.disc_radius_m > 0, "component.disc_radius_m", self.disc_radius_m, "> 0")
        _check(self.sample_steps >= 1, "component.sample_steps", self.sample_steps, ">= 1")


@dataclass
class GenieTokenizerConfig:
    """The ``tokenizer`` component: Genie's ST-ViViT VQ-VAE reconstructing short clips.

    Attributes:
        preset: Model size (:data:`genie_env.models.genie.PRESETS`).
        clip_frames: Frames per training clip (the tokenizer is causal in time; use its ``context_frames``).
    """

    preset: str = "tiny"
    clip_frames: int = 4

    def __post_init__(self) -> None:
        _check(self.clip_frames >= 1, "component.clip_frames", self.clip_frames, ">= 1")


@dataclass
class GenieLAMConfig:
    """The ``lam`` component: Genie's latent action model, next-frame prediction through the action bottleneck.

    Attributes:
        preset: Model size (:data:`genie_env.models.genie.PRESETS`).
        clip_frames: Frames per training clip (``clip_frames - 1`` latent actions).
        diversity_weight: Weight of the action-diversity term (see :class:`~genie_env.models.genie.LatentActionModel`).
        diversity_temperature: Softmax temperature of its soft assignments; a low one saturates on a collapsed
            encoder (every sample sure of the same action) and the term's gradient vanishes.
        variance_weight: Weight of the batch-variance hinge on the latent actions.
        motion_weight: Extra reconstruction weight on pixels that change between consecutive frames (0: plain MSE).
        motion_threshold: Per-channel change (frames in [-1, 1]) above which a pixel counts as changing.
        encoder_difference: The LAM encoder also sees each frame's change from the previous one.
        continuous_steps: Training steps in which the LAM decoder gets the continuous latent instead of its code.
    """

    preset: str = "tiny"
    clip_frames: int = 4
    diversity_weight: float = 0.1
    diversity_temperature: float = 1.0
    variance_weight: float = 10.0
    motion_weight: float = 0.0
    motion_threshold: float = 0.05
    encoder_difference: bool = False
    continuous_steps: int = 0

    def __post_init__(self) -> None:
        _check(self.clip_frames >= 2, "component.clip_frames", self.clip_frames, ">= 2")
        _check(self.motion_weight >= 0, "component.motion_weight", self.motion_weight, ">= 0")
        _check(self.continuous_steps >= 0, "component.continuous_steps", self.continuous_steps, ">= 0")


@dataclass
class GenieDynamicsConfig:
    """The ``dynamics`` component: Genie's MaskGIT dynamics model on tokens and latent actions.

    The frozen tokenizer and latent action model turn each clip into tokens and actions on the fly, exactly as
    at generation time (their EMA weights when the checkpoint has them).

    Attributes:
        preset: Model size (:data:`genie_env.models.genie.PRESETS`); must match the tokenizer's and LAM's.
        clip_frames: Frames per training clip.
        tokenizer: Trained tokenizer: a run directory (its latest checkpoint) or a checkpoint directory.
        lam: Trained latent action model: a run directory or a checkpoint directory.
    """

    preset: str = "tiny"
    clip_frames: int = 8
    tokenizer: str = ""
    lam: str = ""

    def __post_init__(self) -> None:
        _check(self.clip_frames >= 2, "component.clip_frames", self.clip_frames, ">= 2")


@dataclass
class HeadsConfig:
    """The ``heads`` component: reward / termination / object-position heads on recorded transitions.

    Which heads and inputs exist is read from the dataset (its parquet columns, not its videos): a reward head
    when there is a ``reward`` column, an object head when there is ``observation.object``, state and goal inputs
    when there are ``observation.state`` and a goal feature. The reward values, their counts, the termination rate
    and the normalisation statistics are computed from the training episodes when the dataset is built.

    Attributes:
        channels: Output channels of the conv trunk's stride-2 stages.
        hidden: Width of the per-view features, the state/goal embeddings and the shared MLP.
        use_state: Feed ``observation.state`` (when the data has it) to the heads.
        goal_key: Goal feature: ``"auto"`` (``observation.goal``, base frame like the state and object, else
            ``observation.desired_goal``), a feature name, or ``"none"`` for no goal input.
        predict_object: Train an object head when the data has ``observation.object``.
        termination: Train a termination head: ``None`` (auto) when some training row has ``terminated``.
        reward_balance: Oversampling of rare rewards: a transition whose reward value has ``n_k`` training samples
            appears ``round((n_max / n_k) ** reward_balance)`` times per epoch (0: off, 0.5: the square root of
            the imbalance, 1: balanced). Boxing's punches (3% of transitions) would otherwise be ignored. Training
            adds ``log(repeats)`` to the reward logits, so the model's probabilities stay calibrated to the
            recorded frequencies.
        reward_loss_weight: Weight of the reward cross-entropy.
        termination_loss_weight: Weight of the termination BCE (its positive class is weighted by
            ``w = sqrt(negatives / positives)``, with ``log(w)`` added to the training logit, again for calibration).
        object_loss_weight: Weight of the object MSE on normalised targets.
    """

    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    hidden: int = 256
    use_state: bool = True
    goal_key: str = "auto"
    predict_object: bool = True
    termination: bool | None = None
    reward_balance: float = 0.5
    reward_loss_weight: float = 1.0
    termination_loss_weight: float = 1.0
    object_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        ok = len(self.channels) >= 1 and all(c >= 1 for c in self.channels)
        _check(ok, "component.channels", self.channels, "a non-empty list of positive ints")
        _check(self.hidden >= 1, "component.hidden", self.hidden, ">= 1")
        _check(0 <= self.reward_balance <= 1, "component.reward_balance", self.reward_balance, "in [0, 1]")
        for name in ("reward_loss_weight", "termination_loss_weight", "object_loss_weight"):
            _check(getattr(self, name) >= 0, f"component.{name}", getattr(self, name), ">= 0")


@dataclass
class RunConfig:
    """Everything a training run needs; ``component`` is the chosen component's config dataclass."""

    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    component: Any = None


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


# --- coercion --------------------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~"))


def _as_sequence(value: Any, key: str) -> list[Any]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # YAML flow list, e.g. "[0.9, 0.99]"
            parsed = yaml.safe_load(text)
            if not isinstance(parsed, list):
                raise ConfigError(f"{key}: cannot read a list from {value!r}")
            return parsed
        return [] if not text else [v.strip() for v in text.split(",")]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(f"{key}: expected a list, got {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Converts ``value`` (from YAML, or a command-line string) to type ``tp``.

    Raises:
        ConfigError: Naming ``key`` when the value does not fit.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if type(None) in args and _is_none(value):
            return None
        errors = []
        for arm in arms:
            try:
                return coerce(value, arm, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
    if origin in (tuple, list):
        items = _as_sequence(value, key)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ConfigError(f"{key} needs {len(args)} values, got {value!r}")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True)))
        item_type = args[0] if args else Any
        out = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key} must be a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # also reads "1e-4", which YAML 1.1 leaves as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config dataclass, e.g. ``["train.steps", "train.lr", ...]``."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown(key: str, valid: Sequence[str], where: str = "") -> ConfigError:
    return ConfigError(f"unknown config key {key!r}{where}; valid keys: {', '.join(valid)}")


def from_dict(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Builds config dataclass ``cls`` from a (possibly partial) mapping, coercing every value.

    Raises:
        ConfigError: On an unknown key (named, with the valid ones listed) or a value of the wrong type.
    """
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        raise _unknown(f"{prefix}{unknown[0]}", valid_keys(cls, prefix))
    kwargs = {k: coerce(v, types_[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a dataclass field without a default
        raise ConfigError(f"cannot build {prefix or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> Any:
    """A config dataclass as plain YAML/JSON data (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


# --- run configs -----------------------------------------------------------------------------------------


def _sections(component_config: type) -> dict[str, type]:
    return {"train": TrainConfig, "data": DataConfig, "component": component_config}


def run_config_keys(component_config: type) -> list[str]:
    """All valid dotted keys of a run with this component config."""
    return [k for name, cls in _sections(component_config).items() for k in valid_keys(cls, f"{name}.")]


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["train.lr=3e-4", ...]`` -> ``{"train.lr": "3e-4", ...}`` (the value stays a string until coerced)."""
    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4")
        out[key.strip()] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any, cls: type, valid: Sequence[str]) -> None:
    """Sets ``data[b][c] = value`` for ``key = "a.b.c"`` (``data`` is section ``a``, of dataclass ``cls``)."""
    _, *parents, leaf = key.split(".")
    node, node_cls = data, cls
    for part in parents:
        types_ = _field_types(node_cls)
        if part not in types_ or not dataclasses.is_dataclass(types_[part]):
            raise _unknown(key, valid)
        node_cls = types_[part]
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, Mapping) else {}
        node = child
    types_ = _field_types(node_cls)
    if leaf not in types_ or dataclasses.is_dataclass(types_[leaf]):
        raise _unknown(key, valid)
    node[leaf] = value


def load_run_config(
    component_config: type,
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> RunConfig:
    """Builds a :class:`RunConfig`: defaults, then the YAML file, then the overrides.

    Args:
        component_config: The component's config dataclass (the type of the ``component`` section).
        path: Optional YAML file with ``train``, ``data`` and ``component`` sections (all optional).
        overrides: ``"section.key=value"`` strings (``--set``), or a mapping of dotted key to value.

    Returns:
        The run configuration.

    Raises:
        ConfigError: On an unknown section or key (naming it and listing the valid keys), a value of the wrong
            type, or an unreadable YAML file.
    """
    sections = _sections(component_config)
    valid = run_config_keys(component_config)
    data: dict[str, dict[str, Any]] = {name: {} for name in sections}
    if path is not None:
        file = Path(path)
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping with sections {list(sections)}")
        for name, body in loaded.items():
            if name not in sections:
                raise ConfigError(f"unknown config section {name!r} in {file}; valid sections: {list(sections)}")
            if body is None:
                continue
            if not isinstance(body, dict):
                raise ConfigError(f"config section {name!r} in {file} must be a mapping, got {body!r}")
            for key in body:
                if key not in _field_types(sections[name]):
                    raise _unknown(f"{name}.{key}", valid, f" in {file}")
            data[name].update(body)

    pairs = overrides.items() if isinstance(overrides, Mapping) else parse_overrides(overrides).items()
    for key, value in pairs:
        section, _, rest = key.partition(".")
        if section not in sections or not rest:
            raise _unknown(key, valid)
        _set_dotted(data[section], key, value, sections[section], valid)

    return RunConfig(**{name: from_dict(cls, data[name], prefix=f"{name}.") for name, cls in sections.items()})


def dump_run_config(config: RunConfig) -> str:
    """The run configuration as YAML (loadable again with :func:`load_run_config`)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
