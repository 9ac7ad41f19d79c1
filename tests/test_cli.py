"""The genie-env command line: help texts, collect, info, demo, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genie_env.cli import build_parser, main


def test_help_of_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"collect", "info", "demo"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert len(capsys.readouterr().out) > 200, f"{name} --help is too thin"


def test_console_script_collect_and_info(tmp_path: Path) -> None:
    out = tmp_path / "boxing"
    cmd = [sys.executable, "-m", "genie_env", "collect", "ALE/Boxing-v5", "--episodes", "2", "--out", str(out)]
    run = subprocess.run([*cmd, "--max-steps", "5", "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "recorded 2 episodes" in run.stdout
    again = subprocess.run([*cmd, "--max-steps", "5"], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    info = subprocess.run([sys.executable, "-m", "genie_env", "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "episodes=2" in info.stdout


def test_unknown_env_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "Nope-v0", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    assert "Supported: FetchPickAndPlace-v4" in capsys.readouterr().err


def test_demo_writes_videos_and_strips(tmp_path: Path) -> None:
    from genie_env.demo import run_demo

    result = run_demo(tmp_path / "demo", size=32, steps=20)
    for path in [*result.videos.values(), *result.strips.values()]:
        assert path.is_file() and path.stat().st_size > 0
    assert set(result.steps_per_second) == {"FetchPush-v4", "ALE/Boxing-v5"}


def test_demo_imagines_boxing_with_the_shipped_genie(tmp_path: Path) -> None:
    from genie_env.demo import run_demo

    result = run_demo(tmp_path / "demo", size=64, steps=12)
    key = "genie-boxing-tiny (ALE/Boxing-v5)"
    scores = result.imagined[key]
    assert 0 < scores["psnr"] <= 100 and 0 < scores["copy_last_psnr"] <= 100 and scores["frames_per_second"] > 0
    assert result.videos[key].stat().st_size > 0 and result.strips[key].stat().st_size > 0
