"""Every example script runs (at tiny settings) and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_record_and_read(tmp_path: Path) -> None:
    script = EXAMPLES / "record_and_read.py"
    cmd = [sys.executable, str(script), "--out", str(tmp_path / "d"), "--episodes", "1", "--max-steps", "8"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "recorded 9 frames" in run.stdout
    for cam in ("front", "side", "hand"):
        assert f"{cam}: tip at pixel" in run.stdout


def test_genie_imagine(tmp_path: Path) -> None:
    script = EXAMPLES / "genie_imagine.py"
    cmd = [sys.executable, str(script), "--out", str(tmp_path), "--prompt", "2", "--horizon", "3"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "PSNR per imagined step" in run.stdout and (tmp_path / "imagined.png").is_file()


def test_world_env(tmp_path: Path) -> None:
    script = EXAMPLES / "world_env.py"
    cmd = [sys.executable, str(script), "--out", str(tmp_path), "--steps", "4", "--ppo-steps", "128"]
    run = subprocess.run(cmd + ["--maskgit-steps", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "played 4 steps of genie-boxing-tiny" in run.stdout and (tmp_path / "played.png").is_file()
    assert "PPO trained 128 timesteps" in run.stdout


def _run(script: str, *args: str, timeout: int = 600) -> str:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_train_world_model(tmp_path: Path) -> None:
    out = _run(
        "train_world_model.py", "--out", str(tmp_path / "run"), "--episodes", "1", "--max-steps", "12", "--steps", "2"
    )
    assert "recorded 13 frames" in out and "8 latent actions, stepped 6 times" in out
    assert (tmp_path / "run" / "stepped.png").is_file()


def test_play_world(tmp_path: Path) -> None:
    out = _run("play_world.py", "--out", str(tmp_path), "--steps", "3", "--denoise-steps", "1")
    assert "played 3 steps, 4 frames" in out and out.count("world vs MuJoCo PSNR") == 4
    assert "1 episode(s), 4 frames" in out and (tmp_path / "play.mp4").is_file()


def test_imagine_then_reality(tmp_path: Path) -> None:
    out = _run("imagine_then_reality.py", "--out", str(tmp_path), "--steps", "64", "--episodes", "2")
    assert "trained 64 imagined steps" in out
    assert "world: real success" in out and "random: real success" in out
    assert (tmp_path / "compare.png").is_file() and (tmp_path / "eval_world.json").is_file()
