"""``genie-env bench``: the JSON it writes, its ratios, and skipping a world whose checkpoint is missing.

Tiny settings (batch sizes 1 and 2, about a second per configuration); no assertion on speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.bench import format_table, run_bench
from genie_env.cli import main

RECORD_KEYS = {
    "world",
    "env_id",
    "num_envs",
    "warmup_steps",
    "batched_steps",
    "seconds",
    "latency_ms",
    "env_steps_per_s",
    "memory_mb",
    "memory",
    "settings",
}
WORLD_KEYS = RECORD_KEYS | {"checkpoint", "real", "real_steps_per_s", "ratio_vs_real", "model_latency_ms_mean"}


def test_bench_json_rates_and_ratios(tmp_path: Path, gesim_bundle: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_bench(
        out,
        envs=(1, 2),
        seconds=0.5,
        gesim=gesim_bundle,
        maskgit_steps=2,
        precisions=("float32", "bfloat16"),
        warmup=1,
        min_steps=2,
        progress=False,
    )
    assert json.loads(out.read_text()) == result
    assert {"cpu_count", "torch_threads", "torch_version", "device"} <= set(result["machine"])
    assert result["skipped"] == []

    records = result["results"]
    real = {r["env_id"]: r for r in records if r["world"] == "real"}
    assert set(real) == {"ALE/Boxing-v5", "FetchPush-v4"}
    assert real["FetchPush-v4"]["settings"]["cameras"] == ["front", "side", "hand"]
    worlds = [r for r in records if r["world"] != "real"]
    assert sorted((r["world"], r["precision"], r["num_envs"]) for r in worlds) == [
        (world, precision, n) for world in ("genie", "gesim") for precision in ("bfloat16", "float32") for n in (1, 2)
    ]
    assert all(r["settings"]["precision"] == r["precision"] for r in worlds)
    for r in real.values():
        assert set(r) >= RECORD_KEYS
    for r in records:
        assert r["env_steps_per_s"] > 0 and r["batched_steps"] >= 1
        assert r["env_steps_per_s"] == pytest.approx(r["num_envs"] * r["batched_steps"] / r["seconds"])
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] and lat["mean"] > 0
        assert isinstance(r["memory_mb"], float)
    for r in worlds:
        assert set(r) >= WORLD_KEYS
        assert r["real"] == {"genie": "ALE/Boxing-v5", "gesim": "FetchPush-v4"}[r["world"]]
        assert r["real_steps_per_s"] == real[r["real"]]["env_steps_per_s"]
        assert r["ratio_vs_real"] == pytest.approx(r["env_steps_per_s"] / r["real_steps_per_s"])
    genie = next(r for r in worlds if r["world"] == "genie")
    assert genie["settings"]["maskgit_steps"] == 2

    table = format_table(result)
    assert "| world | precision | envs | steps/s | latency ms p50/p95 | memory MB | ratio vs real |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(records)


def test_missing_checkpoints_are_skipped_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    missing = str(tmp_path / "no_such_bundle")
    argv = ["bench", "--json", str(out), "--envs", "1", "--seconds", "0.2", "--no-progress"]
    assert main([*argv, "--genie", missing, "--gesim", missing]) == 0
    result = json.loads(out.read_text())
    skipped = {s["world"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"genie", "gesim"}
    assert all("no_such_bundle" in reason for reason in skipped.values())
    assert {r["world"] for r in result["results"]} == {"real"}
    printed = capsys.readouterr().out
    assert "skipped gesim: checkpoint not found" in printed and "| FetchPush-v4 | - | 1 |" in printed


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="batch sizes"):
        run_bench(envs=(0,), progress=False)
    with pytest.raises(ValueError, match="seconds"):
        run_bench(seconds=0, progress=False)
    with pytest.raises(ValueError, match="precision must be one of .* got 'fp8'"):
        run_bench(precisions=("fp8",), progress=False)
