"""agents: the real-simulator baselines (RealEnv, train_in_reality) and the comparison table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.compare import Entry, comparison_plot, table
from agents.real_eval import real_eval
from agents.reality import RealEnv, train_in_reality
from genie_env.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("env_id", ["FetchPush-v4", "ALE/Boxing-v5"])
def test_real_env_passes_both_checkers_and_matches_real_eval(env_id: str) -> None:
    env = RealEnv(env_id, max_episode_steps=20)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, _ = env.reset(seed=3)
    if env_id.startswith("Fetch"):
        assert set(obs) == {"front", "side", "hand", "state", "goal"}
        assert obs["front"].shape == (64, 64, 3) and obs["front"].dtype == np.uint8
    else:
        assert obs.shape == (64, 64, 3)
    again, _ = env.reset(seed=3)
    assert np.array_equal(
        obs["front"] if isinstance(obs, dict) else obs, again["front"] if isinstance(again, dict) else again
    )
    env.close()


def test_dense_reward_is_minus_the_goal_distance_and_bad_input_is_named() -> None:
    env = RealEnv("FetchReach-v4", reward_type="dense")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(np.full(4, 2.0, np.float32))
    obs, reward, *_ = env.step(np.zeros(4, np.float32))
    assert reward == pytest.approx(-np.linalg.norm(obs["state"][:3] - obs["goal"]), abs=1e-5)
    env.close()
    with pytest.raises(RuntimeError, match="before reset"):
        RealEnv("FetchReach-v4").step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="needs a goal"):
        RealEnv("ALE/Boxing-v5", reward_type="dense")
    with pytest.raises(ValueError, match="reward_type"):
        RealEnv("FetchReach-v4", reward_type="shaped")  # type: ignore[arg-type]


def test_train_in_reality_by_steps_and_by_seconds(tmp_path: Path) -> None:
    kwargs = {"learning_starts": 8, "batch_size": 8}
    steps = train_in_reality(
        "FetchReach-v4",
        tmp_path / "steps",
        algo="SAC",
        total_steps=120,
        num_envs=2,
        algo_kwargs=kwargs,
        reward_type="dense",
        observation_keys=["state", "goal"],
        checkpoint_every=0,
        progress=False,
    )
    assert steps.timesteps == 120 and steps.policy.is_file() and steps.curve is not None
    # 2 envs x 60 steps with Fetch's 50-step episodes: one finished episode each, with dense (negative) returns.
    assert len(steps.returns) == 2 and all(n == 50 and r < 0 for _, r, n in steps.returns)
    run = json.loads((tmp_path / "steps" / "run.json").read_text())
    assert run["kind"] == "real" and run["timesteps"] == 120 and run["env_kwargs"] == {"reward_type": "dense"}

    timed = train_in_reality(
        "FetchReach-v4",
        tmp_path / "time",
        algo="SAC",
        total_steps=None,
        max_seconds=1.0,
        num_envs=2,
        algo_kwargs={**kwargs, "buffer_size": 1000},  # images: keep the replay buffer small
        checkpoint_every=0,
        progress=False,
    )
    assert 0 < timed.timesteps < 10**6 and timed.seconds >= 1.0
    out = real_eval(str(timed.policy), "FetchReach-v4", 2, 0, max_steps=3)
    assert out["lengths"] == [3, 3]
    with pytest.raises(ValueError, match="total_steps, max_seconds"):
        train_in_reality("FetchReach-v4", tmp_path / "x", total_steps=None, num_envs=1)


def test_compare_table_plot_and_cli(tmp_path: Path) -> None:
    random = real_eval("random", "FetchReach-v4", 3, 0, max_steps=5)
    (tmp_path / "random.json").write_text(json.dumps(random))
    run = tmp_path / "run"
    train_in_reality(
        "FetchReach-v4",
        run,
        algo="PPO",
        total_steps=64,
        num_envs=2,
        checkpoint_every=0,
        algo_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        progress=False,
    )
    trained = real_eval(str(run / "policy.zip"), "FetchReach-v4", 3, 0, max_steps=5)
    (tmp_path / "trained.json").write_text(json.dumps(trained))
    entries = [Entry.load("random", tmp_path / "random.json"), Entry.load("ppo", tmp_path / "trained.json", run)]
    text = table(entries)
    assert text.count("\n") == 4 and "| random | 0% (0.0%–56.1%)" in text and "| ppo |" in text and "| 64 |" in text
    assert comparison_plot(entries, tmp_path / "cmp.png").stat().st_size > 10_000

    md, png = tmp_path / "cmp.md", tmp_path / "cli.png"
    args = [
        "compare",
        "--entry",
        f"random={tmp_path / 'random.json'}",
        "--entry",
        f"ppo={tmp_path / 'trained.json'}@{run}",
    ]
    assert main([*args, "--png", str(png), "--md", str(md)]) == 0
    assert png.is_file() and md.read_text() == text
    with pytest.raises(FileNotFoundError, match="real-eval"):
        Entry.load("x", tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="returns.csv"):
        Entry.load("x", tmp_path / "random.json", tmp_path)
    with pytest.raises(SystemExit):
        main(["real-train", "FetchReach-v4", "--out", str(tmp_path / "y"), "--seconds", "0"])
