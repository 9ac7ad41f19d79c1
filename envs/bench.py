"""``genie-env bench``: how fast the world-model envs run, next to the real simulators they imitate.

One process measures, in turn:

* the real simulators exactly as our datasets record them (:func:`genie_env.data.sources.make_source`):
  ``ALE/Boxing-v5`` resized to 64x64, and ``FetchPush-v4`` physics plus three MuJoCo views at 64x64; one env each,
  random actions, resetting when an episode ends;
* every world model through its batched :class:`~envs.core.WorldCore` at each batch size, doing per batched step
  what the ``VectorEnv`` and SB3 adapters do: sample random valid actions, validate them
  (:func:`~envs.adapters.check_actions`), ``timed_step``, rewards and flags to NumPy, observations to ``uint8`` HWC
  NumPy (:func:`~envs.adapters.observations_to_numpy`), and restart the envs whose episode ended (termination or
  the registered ``max_episode_steps``).

Each configuration runs a short warm-up (at most ``warmup`` steps, stopped early once it has taken ``seconds``),
then is measured until it has run ``seconds`` *and* ``min_steps`` steps, or ``max_steps`` steps, or
``3 * seconds`` (whichever comes first, at least one step). So one configuration takes at most about
``4 * seconds`` plus two steps, plus building it, and a default run (2 real + 2 worlds x 3 batch sizes) is bounded.

Reported per configuration: env steps/s (``num_envs * batched steps / wall time``), the latency of one batched
step (mean, p50, p95, in ms, the whole adapter-equivalent iteration; ``model_latency_ms_mean`` is the core's step
alone), memory, and for world models the ratio of their env steps/s to their real simulator's (Genie vs Atari
Boxing, GE-Sim vs Fetch): above 1 the world model produces experience faster than the simulator it learned.

Memory. Torch's CPU allocations are invisible to ``tracemalloc``, and the process's peak RSS
(``getrusage().ru_maxrss``, ``VmHWM``) is a high-water mark of the whole run, which cannot be split between
configurations measured in one process. So ``memory_mb`` on CPU is the **RSS delta**: resident memory after
building the configuration and stepping it, minus resident memory just before building it (after a garbage
collection and, on glibc, ``malloc_trim`` handing freed heap pages back to the OS). It counts the weights, the
per-env state (KV caches, latents, start bank), the step's buffers that the allocator keeps, and a real
simulator's own memory (emulator, MuJoCo model and GL context). It is an estimate: memory an earlier configuration
freed but the allocator kept can be reused without growing the RSS (an underestimate, which ``malloc_trim``
limits), and the first configuration also pays one-time costs (lazily loaded libraries, allocator arenas);
``peak_rss_mb`` (the process's high-water mark so far) is reported alongside. On CUDA, ``memory_mb`` is
``torch.cuda.max_memory_allocated`` during the configuration (peak tensor memory), exact per configuration.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector.utils import batch_space
from tqdm.auto import tqdm

from envs.adapters import batch_to_numpy, check_actions, observations_to_numpy, truncations
from envs.core import WorldCore
from genie_env.checkpoint import CheckpointError
from genie_env.precision import Precision, check_precision
from genie_env.registration import ENV_IDS, NAMESPACE

DEFAULT_ENVS: tuple[int, ...] = (1, 16, 64)
DEFAULT_SECONDS = 10.0
DEFAULT_SIZE = 64


@dataclass(frozen=True)
class WorldSpec:
    """A world model the bench runs, and the real simulator it imitates.

    Attributes:
        name: Short name in the table (``"genie"``, ``"gesim"``).
        env_name: Registered id (without namespace) whose checkpoint, task and horizon are the defaults.
        real: Real simulator id (:func:`~genie_env.data.sources.make_source`) the ratio is taken against.
    """

    name: str
    env_name: str
    real: str

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.env_name}"

    @property
    def default_checkpoint(self) -> str:
        return ENV_IDS[self.env_name]["kwargs"]["checkpoint"]

    @property
    def max_episode_steps(self) -> int | None:
        return ENV_IDS[self.env_name].get("max_episode_steps")


WORLDS: dict[str, WorldSpec] = {
    "genie": WorldSpec("genie", "Genie-Boxing-v0", "ALE/Boxing-v5"),
    "gesim": WorldSpec("gesim", "GESim-FetchPush-v0", "FetchPush-v4"),
}


# -- measurement helpers ------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Current resident set size of this process, MB (psutil, else ``/proc/self/status``)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return _proc_status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """High-water resident set size of this process so far, MB."""
    peak = _proc_status_mb("VmHWM")
    if peak == peak:  # not NaN
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return float("nan")


def _release_freed_memory() -> None:
    """Collects garbage and asks glibc to hand freed heap pages back to the OS (so the next RSS delta sees them)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _Memory:
    """Memory of one configuration: RSS delta on CPU, peak allocated tensor memory on CUDA (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        _release_freed_memory()
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device
        self.before = _rss_mb()

    def result(self) -> dict[str, Any]:
        after = _rss_mb()
        out: dict[str, Any] = {
            "rss_before_mb": round(self.before, 1),
            "rss_after_mb": round(after, 1),
            "rss_delta_mb": round(after - self.before, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        }
        if self.cuda:
            out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            out["method"] = "cuda_max_memory_allocated"
            out["memory_mb"] = out["cuda_max_allocated_mb"]
        else:
            out["method"] = "rss_delta"
            out["memory_mb"] = out["rss_delta_mb"]
        return out


def _time_steps(
    step: Callable[[], None],
    *,
    seconds: float,
    warmup: int,
    min_steps: int,
    max_steps: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Runs ``step`` (warm-up, then the measurement; bounds in the module docstring) and times it."""
    start = time.perf_counter()
    warm = 0
    while warm < warmup:
        step()
        warm += 1
        if time.perf_counter() - start >= seconds:
            break
    sync()
    latencies: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        sync()
        now = time.perf_counter()
        latencies.append(now - t0)
        elapsed = now - start
        done = len(latencies) >= max_steps or elapsed >= 3 * seconds
        if done or (elapsed >= seconds and len(latencies) >= min_steps):
            break
    ms = np.asarray(latencies) * 1e3
    return {
        "warmup_steps": warm,
        "batched_steps": len(latencies),
        "seconds": elapsed,
        "latency_ms": {
            "mean": float(ms.mean()),
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
        },
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


# -- one configuration --------------------------------------------------------------------------------------------


def build_core(
    spec: WorldSpec,
    checkpoint: str | os.PathLike[str],
    num_envs: int,
    *,
    device: str,
    maskgit_steps: int | None = None,
    denoise_steps: int | None = None,
    precision: Precision = "float32",
) -> WorldCore:
    """The batched core of ``spec``'s world from ``checkpoint`` (what ``gym.make_vec`` of its id builds)."""
    if spec.name == "genie":
        from envs.genie_world import build_genie_core

        return build_genie_core(checkpoint, num_envs, device=device, maskgit_steps=maskgit_steps, precision=precision)
    from envs.gesim_world import build_gesim_core

    task = ENV_IDS[spec.env_name]["kwargs"].get("task")
    return build_gesim_core(
        checkpoint, num_envs, task=task, device=device, denoise_steps=denoise_steps, precision=precision
    )


def bench_world(
    spec: WorldSpec,
    checkpoint: str | os.PathLike[str],
    num_envs: int,
    *,
    device: str = "cpu",
    seconds: float = DEFAULT_SECONDS,
    warmup: int = 3,
    min_steps: int = 5,
    max_steps: int = 10_000,
    seed: int = 0,
    maskgit_steps: int | None = None,
    denoise_steps: int | None = None,
    precision: Precision = "float32",
) -> dict[str, Any]:
    """Builds ``spec``'s core with ``num_envs`` envs and times adapter-equivalent batched steps (module docstring).

    Returns:
        The configuration's record (``env_steps_per_s``, ``latency_ms``, ``memory_mb``, ...), without the ratio.
    """
    torch_device = torch.device(device)
    memory = _Memory(torch_device)
    core = build_core(
        spec,
        checkpoint,
        num_envs,
        device=device,
        maskgit_steps=maskgit_steps,
        denoise_steps=denoise_steps,
        precision=precision,
    )
    rng = np.random.default_rng(seed)
    core.seed(rng)
    ids = np.arange(num_envs)
    core.restart(ids, core.draw_starts(rng, num_envs))
    actions = batch_space(core.single_action_space, num_envs)
    actions.seed(seed)
    horizon = spec.max_episode_steps
    model_seconds: list[float] = []
    restarts = 0

    def step() -> None:
        nonlocal restarts
        checked = check_actions(actions.sample(), core.single_action_space, num_envs)
        out = core.timed_step(torch.as_tensor(checked, device=core.device))
        model_seconds.append(core.last_latency_s)
        _, terminated, _ = batch_to_numpy(out)
        done = terminated | truncations(core.steps.numpy(), terminated, horizon)
        if done.any():
            finished = np.flatnonzero(done)
            core.restart(finished, core.draw_starts(rng, finished.size))
            restarts += finished.size
        observations_to_numpy(core.observation(), core.single_observation_space)

    sync = (lambda: torch.cuda.synchronize(torch_device)) if torch_device.type == "cuda" else (lambda: None)
    timing = _time_steps(step, seconds=seconds, warmup=warmup, min_steps=min_steps, max_steps=max_steps, sync=sync)
    mem = memory.result()
    describe = {k: _jsonable(v) for k, v in core.describe().items()}
    core.close()
    measured = model_seconds[-timing["batched_steps"] :]
    return {
        "world": spec.name,
        "env_id": spec.env_id,
        "checkpoint": str(checkpoint),
        "real": spec.real,
        "num_envs": num_envs,
        "precision": precision,
        **timing,
        "env_steps_per_s": num_envs * timing["batched_steps"] / timing["seconds"],
        "model_latency_ms_mean": float(np.mean(measured) * 1e3),
        "env_restarts": restarts,
        "memory_mb": mem.pop("memory_mb"),
        "memory": mem,
        "settings": describe,
    }


def bench_real(
    env_id: str,
    *,
    size: int = DEFAULT_SIZE,
    seconds: float = DEFAULT_SECONDS,
    warmup: int = 3,
    min_steps: int = 5,
    max_steps: int = 100_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Times one real simulator recording at ``size`` x ``size`` (as ``genie-env collect`` does), random actions."""
    from genie_env.data.sources import make_source

    memory = _Memory(torch.device("cpu"))
    source = make_source(env_id, size=size)
    try:
        source.reset(seed)
        source.action_space.seed(seed)
        episodes = 0

        def step() -> None:
            nonlocal episodes
            result = source.step(np.asarray(source.action_space.sample()))
            if result.terminated or result.truncated:
                episodes += 1
                source.reset(seed + episodes)

        timing = _time_steps(step, seconds=seconds, warmup=warmup, min_steps=min_steps, max_steps=max_steps)
        mem = memory.result()
        cameras = source.camera_names
    finally:
        source.close()
    gc.collect()
    return {
        "world": "real",
        "env_id": env_id,
        "num_envs": 1,
        **timing,
        "env_steps_per_s": timing["batched_steps"] / timing["seconds"],
        "episodes_ended": episodes,
        "memory_mb": mem.pop("memory_mb"),
        "memory": mem,
        "settings": {"size": size, "cameras": list(cameras)},
    }


# -- the whole run ------------------------------------------------------------------------------------------------


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers depend on: CPUs, torch threads and version, device."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
    }
    if torch.device(device).type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    return info


def run_bench(
    json_path: str | os.PathLike[str] | None = None,
    *,
    envs: Sequence[int] = DEFAULT_ENVS,
    seconds: float = DEFAULT_SECONDS,
    genie: str | os.PathLike[str] | None = WORLDS["genie"].default_checkpoint,
    gesim: str | os.PathLike[str] | None = WORLDS["gesim"].default_checkpoint,
    device: str = "cpu",
    maskgit_steps: int | None = None,
    denoise_steps: int | None = None,
    precisions: Sequence[Precision] = ("float32",),
    size: int = DEFAULT_SIZE,
    warmup: int = 3,
    min_steps: int = 5,
    max_steps: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmarks the real simulators and every world model at every batch size (module docstring).

    Args:
        json_path: Where to write the result (atomically, strict JSON), if given.
        envs: Batch sizes of the world models.
        seconds: Measured time per configuration (see the module docstring for the bounds).
        genie: Genie bundle directory or shipped name; ``None`` skips Genie.
        gesim: GE-Sim bundle directory or shipped name; ``None`` skips GE-Sim. A checkpoint that cannot be found
            (e.g. a bundle that is not shipped) is skipped with the reason, not an error.
        device: Torch device of the world models (the real simulators run on the CPU).
        maskgit_steps: Genie MaskGIT steps per frame (default: the bundle's).
        denoise_steps: GE-Sim sampler steps per frame (default: the bundle's).
        precisions: Arithmetic of the world models (:mod:`genie_env.precision`); each world and batch size is
            measured once per entry.
        size: Image size of the real simulators' renders.
        warmup, min_steps: Step counts of each configuration (module docstring).
        max_steps: Cap on the measured batched steps of a world-model configuration (the real simulators, much
            faster per step, have a cap of 100,000).
        seed: Seed of the random actions and the start states.
        progress: Show a progress bar over configurations.

    Returns:
        ``{"machine", "settings", "results", "skipped"}``: ``results`` holds one record per configuration (real
        simulators first; world records carry ``ratio_vs_real``), ``skipped`` ``{"world", "reason"}`` entries.

    Raises:
        ValueError: For bad settings (batch sizes, seconds, device).
    """
    envs = [int(n) for n in envs]
    if not envs or any(n < 1 for n in envs):
        raise ValueError(f"batch sizes must be integers >= 1, got {envs}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if min(warmup, max_steps - 1, min_steps - 1) < 0:
        raise ValueError(f"need warmup >= 0, min_steps >= 1, max_steps >= 1; got {warmup}, {min_steps}, {max_steps}")
    precisions = [check_precision(p) for p in precisions]
    if not precisions:
        raise ValueError("precisions must name at least one of float32, bfloat16")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")

    from envs.loading import resolve_world

    skipped: list[dict[str, str]] = []
    worlds: list[tuple[WorldSpec, str]] = []
    for spec, checkpoint in ((WORLDS["genie"], genie), (WORLDS["gesim"], gesim)):
        if checkpoint is None:
            skipped.append({"world": spec.name, "reason": "not requested"})
            continue
        try:
            resolve_world(checkpoint)
        except CheckpointError as exc:
            skipped.append({"world": spec.name, "reason": f"checkpoint not found: {exc}"})
            continue
        worlds.append((spec, str(checkpoint)))

    common = {"seconds": seconds, "warmup": warmup, "min_steps": min_steps, "seed": seed}
    reals = list(dict.fromkeys(spec.real for spec in WORLDS.values()))
    configs = [(spec, checkpoint, p, n) for spec, checkpoint in worlds for p in precisions for n in envs]
    bar = tqdm(total=len(reals) + len(configs), desc="bench", unit="config", disable=not progress)
    results: list[dict[str, Any]] = []
    real_rates: dict[str, float] = {}
    try:
        for env_id in reals:
            bar.set_postfix_str(f"real {env_id}")
            try:
                record = bench_real(env_id, size=size, **common)
            except Exception as exc:  # a missing emulator or GL backend should not cost the world-model numbers
                skipped.append({"world": f"real {env_id}", "reason": f"{type(exc).__name__}: {exc}"})
            else:
                results.append(record)
                real_rates[env_id] = record["env_steps_per_s"]
            bar.update()
        for spec, checkpoint, precision, n in configs:
            bar.set_postfix_str(f"{spec.name} x{n} {precision}")
            record = bench_world(
                spec,
                checkpoint,
                n,
                device=device,
                max_steps=max_steps,
                maskgit_steps=maskgit_steps,
                denoise_steps=denoise_steps,
                precision=precision,
                **common,
            )
            real = real_rates.get(spec.real)
            record["real_steps_per_s"] = real
            record["ratio_vs_real"] = None if real is None else record["env_steps_per_s"] / real
            results.append(record)
            bar.update()
    finally:
        bar.close()

    result = {
        "machine": machine_info(device),
        "settings": {
            "envs": envs,
            "seconds": seconds,
            "warmup": warmup,
            "min_steps": min_steps,
            "max_steps": max_steps,
            "seed": seed,
            "size": size,
            "genie": None if genie is None else str(genie),
            "gesim": None if gesim is None else str(gesim),
            "maskgit_steps": maskgit_steps,
            "denoise_steps": denoise_steps,
            "precisions": precisions,
            "memory_method": "cuda_max_memory_allocated" if torch.device(device).type == "cuda" else "rss_delta",
        },
        "results": results,
        "skipped": skipped,
    }
    if json_path is not None:
        from genie_env.eval import write_json

        write_json(json_path, result)
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of :func:`run_bench`'s result, then one line per skipped world."""
    machine = result["machine"]
    lines = [
        f"device {machine['device']}, {machine['cpus_usable']} CPUs, torch {machine['torch_version']} "
        f"({machine['torch_threads']} threads), memory: {result['settings']['memory_method']}",
        "",
        "| world | precision | envs | steps/s | latency ms p50/p95 | memory MB | ratio vs real |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        name = r["env_id"] if r["world"] == "real" else f"{r['world']} ({Path(r['checkpoint']).name})"
        ratio = "-" if r["world"] == "real" else _fmt(r.get("ratio_vs_real"), 3)
        if r["world"] != "real" and r.get("ratio_vs_real") is not None:
            ratio += f" (vs {r['real']})"
        latency = f"{_fmt(r['latency_ms']['p50'], 2)} / {_fmt(r['latency_ms']['p95'], 2)}"
        lines.append(
            f"| {name} | {r.get('precision', '-')} | {r['num_envs']} | {_fmt(r['env_steps_per_s'])} | {latency} | "
            f"{_fmt(r['memory_mb'])} | {ratio} |"
        )
    lines += [f"skipped {s['world']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)


__all__ = [
    "WORLDS",
    "WorldSpec",
    "bench_real",
    "bench_world",
    "build_core",
    "format_table",
    "machine_info",
    "run_bench",
]
