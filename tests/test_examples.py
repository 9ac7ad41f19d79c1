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
