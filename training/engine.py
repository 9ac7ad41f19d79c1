"""One training engine for every component, built on ``accelerate``.

:class:`Trainer` runs any :class:`~training.components.Component` (``forward(batch) -> (loss, logs)``) on a
map-style dataset:

1. ``accelerate.Accelerator`` prepares the component, AdamW, the LR schedule (linear warm-up, then constant
   or cosine) and the DataLoader, so the same loop runs on one CPU, one GPU, or under
   ``accelerate launch --num_processes N`` (DDP; each process draws ``batch_size`` samples per step).
2. Each step: forward, backward, gradient clipping, optimiser and schedule step, optional EMA update.
3. The main process shows a tqdm bar (loss, samples/s), logs TensorBoard scalars every ``log_every`` steps
   and the component's sample images every ``sample_every`` steps, and writes an atomic checkpoint
   (:mod:`genie_env.checkpoint`) every ``checkpoint_every`` steps and at the end, keeping the last ``keep_last``.

Exact resume. The data order is a seeded permutation per epoch (:class:`EpochSampler`, and
``WindowDataset.set_epoch``), and a checkpoint stores the models, the optimizer, the schedule, the EMA models,
the Python / NumPy / torch RNG states of every process and the position in the data (epoch, steps into it).
``resume=True`` restores all of it, so the steps after a resume compute exactly the losses an uninterrupted run
computes. Ctrl-C (SIGINT) or SIGTERM writes a checkpoint of the last completed step before exiting.

Run directory layout::

    RUN_DIR/config.yaml                      the resolved run configuration
    RUN_DIR/checkpoints/step_XXXXXXXX/       meta.json, <model>/, <model>_ema/, training_state.pt
    RUN_DIR/logs/tensorboard/                TensorBoard events
"""

from __future__ import annotations

import copy
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, gather_object, send_to_device, set_seed
from diffusers.models.modeling_utils import ModelMixin
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm.auto import tqdm

from genie_env.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_meta,
    load_state,
    load_weights_into,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from genie_env.data.lerobot import atomic_write_text
from training.components import Component, get_component
from training.config import RunConfig, TrainConfig, to_dict

TRACKER = "tensorboard"


# --- helpers ---------------------------------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """Seeded shuffling: epoch ``e`` visits ``numpy.random.default_rng([seed, e]).permutation(n)``.

    ``set_epoch(e, start=k)`` skips the first ``k`` indices of that order (a resumed run); calling
    ``set_epoch`` again with the same epoch and no ``start`` keeps the skip (``accelerate`` calls it when an
    iteration begins), a new epoch starts from its beginning.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed = num_items, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int | None = None) -> None:
        if start is not None:
            self.start = start
        elif epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        yield from order[self.start :].tolist()

    def __len__(self) -> int:
        return max(0, self.num_items - self.start)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, with weight decay on matrices / kernels only (nanoGPT's rule)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) RNG states as tensors and plain containers (``weights_only``-safe)."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # TensorBoard hparams take scalars only.
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        step: The step the run stopped at.
        losses: Loss of every step this call ran (this process's batch), by step number (1-based).
        checkpoint: The last checkpoint written.
    """

    step: int
    losses: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None


# --- the trainer -----------------------------------------------------------------------------------------


class _StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM as a stop request that a training loop honours at the next step boundary.

    The handler raises ``KeyboardInterrupt`` at once (a long step stops promptly) *and* remembers the request: a
    ``KeyboardInterrupt`` raised while Python happens to run a finaliser (e.g. a video reader's generator being
    closed) is printed and swallowed by the interpreter, so :meth:`check` raises again after the step.
    Handlers are only installed from the main thread, and the previous ones are restored afterwards.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        raise KeyboardInterrupt(f"signal {signum}")

    def check(self) -> None:
        """Raises ``KeyboardInterrupt`` if a stop was requested."""
        if self.signal is not None:
            raise KeyboardInterrupt(f"signal {self.signal}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Trainer:
    """Trains one component; see the module docstring.

    Args:
        component: The component (its ``models()`` are what checkpoints hold).
        dataset: Map-style dataset of item dicts (e.g. a ``WindowDataset``); ``set_epoch`` is called if present.
        config: Optimisation, logging and checkpointing settings; ``config.out_dir`` is the run directory.
        name: Component name, recorded in checkpoints and checked on resume.
        run_config: The full run configuration (plain data) for ``config.yaml``, ``meta.json`` and TensorBoard;
            defaults to ``{"train": config}``.
        resume: Continue from the run directory's latest checkpoint (start fresh if it has none).
        progress: Show a progress bar (else print a line every ``log_every`` steps).

    Raises:
        FileExistsError: If the run directory already holds checkpoints and ``resume`` is False.
        ValueError: If the dataset holds fewer items than one global batch.
    """

    def __init__(
        self,
        component: Component,
        dataset: Dataset,
        config: TrainConfig,
        *,
        name: str = "component",
        run_config: Mapping[str, Any] | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.config, self.name, self.progress = config, name, progress
        self.run_config = dict(run_config) if run_config is not None else {"train": to_dict(config)}
        self.out_dir = Path(config.out_dir)
        self.dataset = dataset
        cfg = config

        # 1. Accelerator; the schedule is stepped once per optimiser step whatever the process count.
        self.accelerator = acc = Accelerator(
            mixed_precision=cfg.mixed_precision,
            dynamo_backend="inductor" if cfg.compile else "no",
            log_with=TRACKER,
            project_config=ProjectConfiguration(project_dir=str(self.out_dir), logging_dir=str(self.out_dir / "logs")),
            step_scheduler_with_optimizer=False,
            rng_types=[],  # the sampler is seeded per epoch; nothing to synchronise
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=component.find_unused_parameters)],
        )
        existing = latest_checkpoint(self.out_dir)
        if existing is not None and not resume:
            raise FileExistsError(
                f"{self.out_dir} already holds checkpoints (latest: {existing.name}); "
                "resume it (--resume) or choose a new run directory"
            )
        set_seed(cfg.seed, device_specific=True)  # distinct draws per process

        # 2. Data: a seeded order per epoch, equal-sized batches (accelerate shards them across processes).
        global_batch = cfg.batch_size * acc.num_processes
        if len(dataset) < global_batch:
            raise ValueError(
                f"the dataset has {len(dataset)} items, fewer than one global batch "
                f"({cfg.batch_size} x {acc.num_processes} processes)"
            )
        self.sampler = EpochSampler(len(dataset), cfg.seed)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            # Worker seeds come from this generator, so starting an iterator never touches the global RNG.
            generator=torch.Generator().manual_seed(cfg.seed),
        )

        # 3. Optimiser and schedule.
        optimizer = torch.optim.AdamW(
            param_groups(component, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
        self.component, self.optimizer, self.loader, self.scheduler = acc.prepare(
            component, optimizer, loader, scheduler
        )
        self.models: dict[str, ModelMixin] = acc.unwrap_model(self.component).models()
        self.params = [p for p in self.component.parameters() if p.requires_grad]

        # 4. Fine-tuning start (a resumed run loads its own checkpoint below instead), then EMA copies.
        if cfg.init_from and not (resume and existing is not None):
            self._init_weights(cfg.init_from)
        # EMA copies, saved as "<model>_ema".
        self.ema: dict[str, ModelMixin] = {}
        if cfg.ema_decay > 0:
            self.ema = {n: copy.deepcopy(m).requires_grad_(False).eval() for n, m in self.models.items()}

        # 5. Position, and the checkpoint to continue from.
        self.step, self.epoch, self.epoch_steps = 0, 0, 0
        self.logs: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self._saved_step: int | None = None
        self._batches: Iterator[Any] | None = None
        self._sample_batch: Any = None
        self._start_time = time.time()
        self._elapsed_before = 0.0  # wall-clock of the sessions before a resume
        if resume and existing is not None:
            self.load(existing)
        elif resume:
            acc.print(f"no checkpoint in {self.out_dir}; starting a new run")

    # --- data --------------------------------------------------------------------------------------------

    def _next_batch(self) -> Any:
        while True:
            if self._batches is None:
                # A new pass: this epoch's seeded order, minus the part a resumed run already trained on.
                skip = self.epoch_steps * self.config.batch_size * self.accelerator.num_processes
                self.sampler.set_epoch(self.epoch, start=skip)
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self.epoch)
                self.loader.set_epoch(self.epoch)
                self._batches = iter(self.loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
                self.epoch, self.epoch_steps = self.epoch + 1, 0

    # --- training ----------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Trains up to ``config.steps``; returns the losses of the steps it ran and the last checkpoint.

        Raises:
            KeyboardInterrupt: After writing a checkpoint of the last completed step.
        """
        cfg, acc = self.config, self.accelerator
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(self.run_config, sort_keys=False))
        acc.init_trackers(TRACKER, config=_flat({"component": self.name, **self.run_config}))
        global_batch = cfg.batch_size * acc.num_processes
        result = TrainResult(step=self.step)
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=f"train {self.name}",
            unit="step",
            dynamic_ncols=True,
            disable=not (self.progress and acc.is_main_process),
        )
        stop = _StopRequest()
        try:
            with stop.installed():
                self._train_loop(cfg, acc, bar, result, global_batch, stop)
        except KeyboardInterrupt:
            bar.close()
            if self._saved_step != self.step:
                acc.print(f"interrupted: saving step {self.step}")
                self.save(collective=False)  # the other processes may be gone already
            acc.end_training()
            raise
        bar.close()
        if self._saved_step != self.step:
            self.save()
        acc.print(f"trained {self.name} to step {self.step} -> {self.last_checkpoint}")
        acc.end_training()
        result.step, result.checkpoint = self.step, self.last_checkpoint
        return result

    def _train_loop(
        self,
        cfg: TrainConfig,
        acc: Accelerator,
        bar: Any,
        result: TrainResult,
        global_batch: int,
        stop: _StopRequest,
    ) -> None:
        """Steps until ``config.steps``; raises ``KeyboardInterrupt`` at a step boundary once a stop is requested."""
        window_start, window_steps = time.perf_counter(), 0
        while self.step < cfg.steps:
            batch = self._next_batch()

            # 1. Forward, backward, update.
            self.component.train()
            loss, logs = self.component(batch)
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(self.params, cfg.grad_clip) if cfg.grad_clip > 0 else None
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._update_ema()
            self.step, self.epoch_steps = self.step + 1, self.epoch_steps + 1
            result.losses[self.step] = float(logs.get("train/loss", loss.item()))

            # 2. Progress bar and logs.
            window_steps += 1
            samples_per_s = window_steps * global_batch / max(time.perf_counter() - window_start, 1e-9)
            bar.set_postfix({"loss": f"{result.losses[self.step]:.4f}", "samples/s": f"{samples_per_s:.1f}"})
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                extra = {"train/lr": self.scheduler.get_last_lr()[0], "perf/samples_per_s": samples_per_s}
                if grad_norm is not None:
                    extra["train/grad_norm"] = float(grad_norm)
                self._log({**logs, **extra})
                window_start, window_steps = time.perf_counter(), 0

            # 3. Samples and checkpoints.
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                self._log_samples()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
            stop.check()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not self.ema:
            return
        # diffusers' EMAModel warm-up: the decay grows as (1 + n) / (10 + n) until it reaches ema_decay.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for name, ema in self.ema.items():
            model = self.models[name]
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p.detach(), 1.0 - decay)
            for e, b in zip(ema.buffers(), model.buffers(), strict=True):
                e.copy_(b)

    def _log(self, logs: Mapping[str, float]) -> None:
        acc = self.accelerator
        keys = sorted(logs)
        values = torch.tensor([float(logs[k]) for k in keys], device=acc.device, dtype=torch.float64)
        if acc.num_processes > 1:
            values = acc.reduce(values, reduction="mean")
        self.logs = dict(zip(keys, values.tolist(), strict=True))
        self.logs["train/epoch"] = float(self.epoch)
        acc.log(self.logs, step=self.step)
        if not self.progress:
            acc.print(
                f"step {self.step}/{self.config.steps}  loss {self.logs.get('train/loss', float('nan')):.4f}  "
                f"lr {self.logs['train/lr']:.2e}  {self.logs['perf/samples_per_s']:.1f} samples/s"
            )

    def _log_samples(self) -> None:
        """Logs the component's sample images for a fixed batch (main process; training RNG untouched)."""
        acc = self.accelerator
        if not acc.is_main_process:
            return
        if self._sample_batch is None:
            n = len(self.dataset)
            items = [self.dataset[int(i)] for i in np.linspace(0, n - 1, min(n, 4)).round()]
            self._sample_batch = default_collate(items)
        component = acc.unwrap_model(self.component)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), acc.autocast():
            component.eval()
            images = component.samples(send_to_device(self._sample_batch, acc.device))
            component.train()
        if images:
            writer = acc.get_tracker(TRACKER, unwrap=True)
            for key, image in images.items():
                writer.add_image(f"samples/{key}", image, self.step, dataformats="HWC")

    # --- checkpoints -------------------------------------------------------------------------------------

    def save(self, *, collective: bool = True) -> Path:
        """Writes a checkpoint of the current step (main process), then prunes old ones.

        Args:
            collective: Gather every process's RNG state and wait for all processes. ``False`` (Ctrl-C) saves
                the main process's state only; a resume then re-seeds the other processes.

        Returns:
            The checkpoint path.
        """
        acc = self.accelerator
        rng = gather_object([rng_state()]) if collective and acc.num_processes > 1 else [rng_state()]
        path = checkpoint_path(self.out_dir, self.step)
        if acc.is_main_process:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "epoch_steps": self.epoch_steps,
                "num_processes": acc.num_processes,
                "batch_size": self.config.batch_size,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
            }
            meta = {
                "step": self.step,
                "epoch": self.epoch,
                "component": self.name,
                "num_processes": acc.num_processes,
                # Wall-clock of the whole run: earlier sessions (before a resume) plus this one.
                "elapsed_s": round(self._elapsed_before + time.time() - self._start_time, 3),
                "config": self.run_config,
                "metrics": self.logs,
            }
            models = {**self.models, **{f"{n}_ema": m for n, m in self.ema.items()}}
            save_checkpoint(path, models, meta, state=state)
            prune_checkpoints(self.out_dir, self.config.keep_last)
        if collective:
            acc.wait_for_everyone()
        self._saved_step, self.last_checkpoint = self.step, path
        return path

    def _init_weights(self, source: str) -> None:
        """Loads every model's weights (EMA ones when saved) from checkpoint or run ``source``."""
        root = resolve_checkpoint(source)
        for name, model in self.models.items():
            folder = f"{name}_ema" if (root / f"{name}_ema").is_dir() else name
            load_weights_into(root, {folder: model})
        self.accelerator.print(f"initialised {sorted(self.models)} from {root}")

    def load(self, path: Path) -> None:
        """Restores everything :meth:`save` wrote, so the next steps equal those of an uninterrupted run."""
        acc = self.accelerator
        meta = load_meta(path)
        if meta.get("component", self.name) != self.name:
            raise CheckpointError(f"{path} holds component {meta['component']!r}, not {self.name!r}")
        state = load_state(path)
        load_weights_into(path, self.models)
        if self.ema:
            if all((path / f"{n}_ema").is_dir() for n in self.ema):
                load_weights_into(path, {f"{n}_ema": m for n, m in self.ema.items()})
            else:  # EMA switched on for a run that had none: start it from the current weights
                for name, ema in self.ema.items():
                    ema.load_state_dict(self.models[name].state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.epoch_steps = state["step"], state["epoch"], state["epoch_steps"]
        self._elapsed_before = float(meta.get("elapsed_s", 0.0))

        same_layout = state["num_processes"] == acc.num_processes and state["batch_size"] == self.config.batch_size
        if same_layout and len(state["rng"]) == acc.num_processes:
            set_rng_state(state["rng"][acc.process_index])
        else:
            acc.print(
                f"warning: {path.name} was saved by {state['num_processes']} process(es) x batch "
                f"{state['batch_size']} (RNG of {len(state['rng'])}); this run has {acc.num_processes} x "
                f"{self.config.batch_size}: continuing with fresh random draws (not an exact resume)"
            )
            set_seed(self.config.seed + self.step, device_specific=True)
            seen = self.epoch_steps * state["num_processes"] * state["batch_size"]
            self.epoch_steps = seen // (acc.num_processes * self.config.batch_size)
        self._saved_step, self.last_checkpoint = self.step, path
        acc.print(f"resumed from {path} (step {self.step}, epoch {self.epoch})")


def train_component(name: str, config: RunConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Builds component ``name`` and its dataset from ``config`` and trains it (the ``genie-env train`` path).

    The initial weights depend only on ``config.train.seed`` (identical on every process).
    """
    component_cls = get_component(name)
    if not isinstance(config.component, component_cls.config_class):
        raise TypeError(f"{name} needs a {component_cls.config_class.__name__}, got {type(config.component)}")
    set_seed(config.train.seed)
    component = component_cls(config.component)
    dataset = component_cls.build_dataset(config.component, config.data, config.train.seed)
    component.attach_data(dataset)
    trainer = Trainer(
        component,
        dataset,
        config.train,
        name=name,
        run_config=to_dict(config),
        resume=resume,
        progress=progress,
    )
    return trainer.fit()
