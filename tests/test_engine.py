"""Tests of the training engine: atomic checkpoints, configs, exact resume, Ctrl-C, the CLI and two processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from genie_env import __version__
from genie_env.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_meta,
    load_models,
    load_state,
    load_weights_into,
    prune_checkpoints,
    read_weights,
    save_checkpoint,
)
from genie_env.models.gesim import GeSimVAE, build_vae
from training.components import GeSimVAEComponent
from training.config import ConfigError, GeSimVAEConfig, RunConfig, dump_run_config, load_run_config
from training.engine import TrainResult, train_component

# Tiny models on one intra-op thread; a fresh accelerate state for every test (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")

# 13 single-frame windows (episode 0, front camera) at 32x32, batches of 5: two steps per epoch, so a resume
# at step 3 starts mid-epoch and the following steps cross an epoch boundary.
FAST = [
    "data.episodes=[0]",
    "data.cameras=front",
    "component.resolution=32",
    "train.batch_size=5",
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "train.ema_decay=0.9",
    "train.log_every=1",
    "train.sample_every=3",
    "train.checkpoint_every=3",
    "train.keep_last=2",
]


def _config(data: Path, out: Path, steps: int, *extra: str) -> RunConfig:
    overrides = [*FAST, f"data.path={data}", f"train.out_dir={out}", f"train.steps={steps}", *extra]
    return load_run_config(GeSimVAEConfig, overrides=overrides)


def _vae(seed: int) -> GeSimVAE:
    torch.manual_seed(seed)
    return build_vae("tiny")


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _hidden(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def straight_run(fetch_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult]:
    """Six uninterrupted steps: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    return out, train_component("gesim-vae", _config(fetch_dataset, out, 6), progress=False)


# --- checkpoints -----------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    """Weights, config, meta and extra state come back identical; latest/prune see complete checkpoints only."""
    vae, ema = _vae(0), _vae(1)
    meta = {"step": 7, "config": {"train": {"lr": 1e-3, "betas": [0.9, 0.99]}}, "metrics": {"train/loss": 0.25}}
    path = save_checkpoint(
        checkpoint_path(tmp_path, 7), {"vae": vae, "vae_ema": ema}, meta, state={"x": torch.arange(3)}
    )
    assert path == tmp_path / "checkpoints" / "step_00000007"
    assert sorted(os.listdir(path)) == ["meta.json", "training_state.pt", "vae", "vae_ema"]

    loaded = load_models(path, {"vae": GeSimVAE, "vae_ema": GeSimVAE})
    _assert_same_state(loaded["vae"].state_dict(), vae.state_dict())
    _assert_same_state(loaded["vae_ema"].state_dict(), ema.state_dict())
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded["vae"].config) == public(vae.config)
    target = _vae(2)
    load_weights_into(path, {"vae": target})
    _assert_same_state(target.state_dict(), vae.state_dict())

    got = load_meta(path)
    assert {k: got[k] for k in meta} == meta
    assert got["genie_env_version"] == __version__ and isinstance(got["saved_at"], float)
    assert got["models"]["vae"].endswith("GeSimVAE")
    assert torch.equal(load_state(path)["x"], torch.arange(3))

    save_checkpoint(checkpoint_path(tmp_path, 12), {"vae": vae}, {"step": 12})
    (tmp_path / "checkpoints" / "step_00000020").mkdir()  # no meta.json: not a complete checkpoint
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 12)
    assert prune_checkpoints(tmp_path, keep_last=1) == [path]
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, 12)]
    assert _hidden(tmp_path / "checkpoints") == []


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure mid-write or mid-swap leaves the old checkpoint complete at the final path and no temp dirs."""
    path = checkpoint_path(tmp_path, 5)
    save_checkpoint(path, {"vae": _vae(0)}, {"step": 1})
    before = read_weights(path / "vae")
    new = _vae(1)

    def check_intact() -> None:
        assert load_meta(path)["step"] == 1
        assert sorted(os.listdir(path)) == ["meta.json", "vae"]
        _assert_same_state(read_weights(path / "vae"), before)
        assert _hidden(path.parent) == []

    # 1. Dies after the first model was written, before the second one.
    save_pretrained = GeSimVAE.save_pretrained

    def dying_save(self: GeSimVAE, save_directory: str, **kwargs: object) -> None:
        if Path(save_directory).name == "second":
            raise OSError("disk full")
        return save_pretrained(self, save_directory, **kwargs)

    monkeypatch.setattr(GeSimVAE, "save_pretrained", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"vae": new, "second": new}, {"step": 2})
    monkeypatch.undo()
    check_intact()

    # 2. Dies while renaming the finished new checkpoint into place (the old one was already moved aside).
    rename = os.rename

    def dying_rename(src: str, dst: str) -> None:
        if ".tmp-" in os.fspath(src):
            raise OSError("crash during rename")
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", dying_rename)
    with pytest.raises(OSError, match="crash during rename"):
        save_checkpoint(path, {"vae": new}, {"step": 3})
    monkeypatch.undo()
    check_intact()

    # And a successful save replaces it.
    save_checkpoint(path, {"vae": new}, {"step": 4})
    assert load_meta(path)["step"] == 4
    _assert_same_state(read_weights(path / "vae"), new.state_dict())
    assert _hidden(path.parent) == []


def test_missing_or_corrupt_files_are_named(tmp_path: Path) -> None:
    vae = _vae(0)

    def fresh(name: str) -> Path:
        return save_checkpoint(tmp_path / name, {"vae": vae}, {"step": 1}, state={"step": 1})

    def expect(path: Path, func: Callable[..., object], *args: object) -> None:
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            func(*args)

    p = fresh("no_config")
    (p / "vae" / "config.json").unlink()
    expect(p / "vae" / "config.json", load_models, p, {"vae": GeSimVAE})
    expect(p / "vae" / "config.json", load_weights_into, p, {"vae": vae})

    p = fresh("bad_config")
    (p / "vae" / "config.json").write_text("{broken")
    expect(p / "vae" / "config.json", load_models, p, {"vae": GeSimVAE})

    p = fresh("no_weights")
    (p / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    expect(p / "vae" / "diffusion_pytorch_model.safetensors", load_models, p, {"vae": GeSimVAE})

    p = fresh("bad_weights")
    weights = p / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    expect(weights, load_models, p, {"vae": GeSimVAE})
    expect(weights, load_weights_into, p, {"vae": vae})

    p = fresh("no_meta")
    (p / "meta.json").unlink()
    expect(p / "meta.json", load_meta, p)
    expect(p / "meta.json", load_models, p, {"vae": GeSimVAE})

    p = fresh("bad_meta")
    (p / "meta.json").write_text("{not json")
    expect(p / "meta.json", load_meta, p)

    p = fresh("bad_state")
    (p / "training_state.pt").write_bytes(b"garbage")
    expect(p / "training_state.pt", load_state, p)
    expect(p / "missing_model", load_models, p, {"missing_model": GeSimVAE})


# --- configuration ---------------------------------------------------------------------------------------


def test_yaml_and_set_overrides(tmp_path: Path) -> None:
    """YAML then --set, coerced to the field types; a dumped config loads back equal."""
    file = tmp_path / "run.yaml"
    file.write_text(
        "train:\n  lr: 1.0e-3\n  steps: 50\n  betas: [0.8, 0.95]\n"
        "data:\n  path: /data/fetch\n  episodes: [0, 2]\n"
        "component:\n  kl_weight: 1e-5\n  resolution: 48\n"
    )
    overrides = [
        "train.lr=3e-4",
        "train.mixed_precision=bf16",
        "train.grad_clip=0",
        "data.cameras=front,side",
        "component.resolution=none",
        "component.sample_posterior=false",
    ]
    cfg = load_run_config(GeSimVAEConfig, file, overrides)
    assert cfg.train.lr == 3e-4 and cfg.train.steps == 50 and cfg.train.betas == (0.8, 0.95)
    assert cfg.train.mixed_precision == "bf16" and cfg.train.grad_clip == 0.0 and cfg.train.batch_size == 8
    assert cfg.data.path == "/data/fetch" and cfg.data.episodes == [0, 2] and cfg.data.cameras == ["front", "side"]
    assert isinstance(cfg.component, GeSimVAEConfig)
    assert cfg.component.kl_weight == 1e-5  # YAML 1.1 reads "1e-5" as a string; the field type makes it a float
    assert cfg.component.resolution is None and cfg.component.sample_posterior is False

    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(dump_run_config(cfg))
    assert load_run_config(GeSimVAEConfig, dumped) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], r"unknown config key 'train\.lrr'; valid keys: train\.steps, .*train\.lr, "),
        (["model.depth=3"], r"unknown config key 'model\.depth'; valid keys: .*component\.kl_weight"),
        (["train.lr.x=3"], r"unknown config key 'train\.lr\.x'"),
        (["train.steps=abc"], r"train\.steps must be an integer, got 'abc'"),
        (["train.mixed_precision=fp8"], r"train\.mixed_precision must be one of \['no', 'bf16', 'fp16'\]"),
        (["train.betas=0.9"], r"train\.betas needs 2 values"),
        (["train.batch_size=0"], r"train\.batch_size must be >= 1, got 0"),
        (["component.resolution=30"], r"component\.resolution must be a positive multiple of 8"),
        (["train.lr"], r"must look like key=value"),
    ],
)
def test_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(GeSimVAEConfig, overrides=overrides)


def test_yaml_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    file = tmp_path / "typo.yaml"
    file.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=rf"'train\.stepz' in {re.escape(str(file))}; valid keys: train\.steps"):
        load_run_config(GeSimVAEConfig, file)
    file.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'"):
        load_run_config(GeSimVAEConfig, file)


# --- training --------------------------------------------------------------------------------------------


def test_straight_run_writes_checkpoints_logs_and_samples(straight_run: tuple[Path, TrainResult]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, result = straight_run
    assert sorted(result.losses) == [1, 2, 3, 4, 5, 6] and len(set(result.losses.values())) == 6
    assert result.losses[6] < result.losses[1]
    assert list_checkpoints(out) == [checkpoint_path(out, 3), checkpoint_path(out, 6)]
    assert result.checkpoint == checkpoint_path(out, 6)
    meta = load_meta(result.checkpoint)
    assert meta["step"] == 6 and meta["component"] == "gesim-vae" and meta["num_processes"] == 1
    assert meta["config"]["train"]["steps"] == 6 and meta["config"]["component"]["resolution"] == 32
    assert meta["metrics"]["train/loss"] == pytest.approx(result.losses[6])
    models = load_models(result.checkpoint, {"vae": GeSimVAE, "vae_ema": GeSimVAE})
    assert not torch.equal(models["vae"].encoder.conv_in.weight, models["vae_ema"].encoder.conv_in.weight)
    assert load_run_config(GeSimVAEConfig, out / "config.yaml").train.steps == 6

    events = EventAccumulator(str(out / "logs" / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"train/loss", "train/kl", "train/lr", "train/grad_norm", "perf/samples_per_s"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Images("samples/reconstruction")] == [3, 6]


def test_resume_continues_exactly(fetch_dataset: Path, tmp_path: Path, straight_run: tuple[Path, TrainResult]) -> None:
    """3 steps + resume to 6 == 6 straight steps: same losses, same final weights and EMA weights."""
    ref_dir, ref = straight_run
    first = train_component("gesim-vae", _config(fetch_dataset, tmp_path, 3), progress=False)
    assert first.losses == {s: ref.losses[s] for s in (1, 2, 3)}
    state = load_state(checkpoint_path(tmp_path, 3))
    assert (state["epoch"], state["epoch_steps"]) == (1, 1)  # the resume starts in the middle of an epoch

    second = train_component("gesim-vae", _config(fetch_dataset, tmp_path, 6), resume=True, progress=False)
    assert second.losses == {s: ref.losses[s] for s in (4, 5, 6)}
    # The recorded wall-clock covers the whole run, not just the resumed session.
    assert load_meta(checkpoint_path(tmp_path, 6))["elapsed_s"] > load_meta(checkpoint_path(tmp_path, 3))["elapsed_s"]
    for name in ("vae", "vae_ema"):
        _assert_same_state(
            read_weights(checkpoint_path(tmp_path, 6) / name), read_weights(checkpoint_path(ref_dir, 6) / name)
        )


def test_init_from_starts_a_new_run_from_ema_weights(
    fetch_dataset: Path, tmp_path: Path, straight_run: tuple[Path, TrainResult]
) -> None:
    """``train.init_from`` loads the source's EMA weights into a fresh run at step 0; a resume ignores it."""
    ref_dir, _ = straight_run
    out = tmp_path / "finetune"
    result = train_component("gesim-vae", _config(fetch_dataset, out, 0, f"train.init_from={ref_dir}"), progress=False)
    assert result.checkpoint == checkpoint_path(out, 0)
    _assert_same_state(read_weights(result.checkpoint / "vae"), read_weights(checkpoint_path(ref_dir, 6) / "vae_ema"))
    resumed = train_component(
        "gesim-vae", _config(fetch_dataset, out, 1, "train.init_from=/nonexistent"), resume=True, progress=False
    )
    assert sorted(resumed.losses) == [1]
    with pytest.raises(CheckpointError, match="nonexistent"):
        train_component("gesim-vae", _config(fetch_dataset, tmp_path / "x", 1, "train.init_from=/nonexistent"))


def test_ctrl_c_saves_checkpoint(
    fetch_dataset: Path, tmp_path: Path, straight_run: tuple[Path, TrainResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt in step 5 saves step 4 (no periodic checkpoints here); resuming from it is exact."""
    _, ref = straight_run
    forward, calls = GeSimVAEComponent.forward, []

    def interrupted(self: GeSimVAEComponent, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return forward(self, batch)

    monkeypatch.setattr(GeSimVAEComponent, "forward", interrupted)
    config = _config(fetch_dataset, tmp_path, 6, "train.checkpoint_every=0")
    with pytest.raises(KeyboardInterrupt):
        train_component("gesim-vae", config, progress=False)
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, 4)]
    assert load_meta(checkpoint_path(tmp_path, 4))["step"] == 4

    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train_component("gesim-vae", config, progress=False)
    resumed = train_component("gesim-vae", config, resume=True, progress=False)
    assert resumed.losses == {5: ref.losses[5], 6: ref.losses[6]}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_saves_checkpoint(fetch_dataset: Path, tmp_path: Path, signum: int) -> None:
    """A real Ctrl-C (SIGINT) or SIGTERM to ``genie-env train`` writes a checkpoint and exits with 130."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "genie_env", "train", "gesim-vae", "--data", str(fetch_dataset)]
    command += ["--out", str(out), "--steps", "100000", "--no-progress", "--set", "train.log_every=1"]
    command += ["--set", "data.cameras=front", "--set", "component.resolution=32", "--set", "train.batch_size=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 2/"):
                proc.send_signal(signal.SIGINT)
                break
        output = "".join(lines) + proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted: saving step" in output
    (saved,) = list_checkpoints(out)
    assert load_meta(saved)["step"] >= 2


# --- command line ----------------------------------------------------------------------------------------


def test_train_help_lists_components(capsys: pytest.CaptureFixture[str]) -> None:
    from genie_env.cli import build_parser

    parser = build_parser()
    assert "train" in parser.format_help()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for text in ("gesim-vae", "--data DIR", "--out RUN_DIR", "--config YAML", "--set KEY=VALUE", "--resume"):
        assert text in out
    assert "train.lr" in out and "component.{preset, resolution" in out


def test_train_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genie_env.cli import main

    argv = ["train", "gesim-vae", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "train.lrr=1"]
    assert main(argv) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes(fetch_dataset: Path, tmp_path: Path) -> None:
    """``accelerate launch`` with 2 CPU processes (DDP over gloo) trains, writes one checkpoint, and resumes.

    ``accelerate launch --cpu --num_processes 2`` starts a single process (its simple launcher runs one
    process unless MPI is configured); two CPU processes need the torchrun launcher (``--multi_gpu``) with
    ``ACCELERATE_USE_CPU=1``.
    """
    out = tmp_path / "run"

    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        command = [
            *[sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"],
            *["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
            *["--main_process_port", str(_free_port()), "-m", "genie_env", "train", "gesim-vae"],
            *["--data", str(fetch_dataset), "--out", str(out), "--no-progress", *args],
            *["--set", "data.cameras=front", "--set", "component.resolution=32", "--set", "train.batch_size=2"],
        ]
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    proc = launch("--steps", "2")
    assert list_checkpoints(out) == [checkpoint_path(out, 2)]
    assert load_meta(checkpoint_path(out, 2))["num_processes"] == 2
    rng = load_state(checkpoint_path(out, 2))["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # one RNG state per process
    assert proc.stdout.count("trained gesim-vae to step 2") == 1  # printed by the main process only

    proc = launch("--steps", "3", "--resume")
    assert "resumed from" in proc.stdout and "warning" not in proc.stdout
    assert list_checkpoints(out) == [checkpoint_path(out, 2), checkpoint_path(out, 3)]
