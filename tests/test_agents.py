"""agents: the latent-to-real action mapping and the real-simulator evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.latent_mapping import LatentActionMapping, fit_latent_mapping
from agents.real_eval import real_eval
from envs.keymap import ARROW_ACTIONS, LATENT_MAPPING_FILE, load_latent_mapping
from genie_env.data.lerobot import LeRobotDataset

RESULT_KEYS = {"mean_return", "std_return", "ci95_low", "ci95_high", "success_rate", "returns", "lengths", "episodes"}


@pytest.fixture(scope="module")
def genie_world():
    from genie_env.assets import asset_path
    from genie_env.models.genie.world import GenieWorldModel

    return GenieWorldModel.from_pretrained(asset_path("genie-boxing-tiny")).eval()


def test_fit_counts_every_transition_and_round_trips(genie_world, atari_dataset: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(atari_dataset)
    mapping = fit_latent_mapping(genie_world, ds)
    transitions = sum(ds.episode_length(i) - 1 for i in range(ds.num_episodes))
    assert mapping.counts.shape == (genie_world.lam.config.num_actions, 18)
    assert mapping.num_transitions == transitions
    assert len(mapping.latent_to_real) == mapping.num_latent
    assert all(0 <= a < 18 for a in mapping.latent_to_real)
    assert mapping.real_action_names[:3] == ["NOOP", "FIRE", "UP"]

    loaded = LatentActionMapping.load(mapping.save(tmp_path / "map.json"))
    np.testing.assert_array_equal(loaded.counts, mapping.counts)
    assert loaded.real_action_names == mapping.real_action_names
    assert (loaded.latent_to_real, loaded.real_to_latent) == (mapping.latent_to_real, mapping.real_to_latent)

    capped = fit_latent_mapping(genie_world, ds, episodes=1, max_transitions=7)
    assert capped.num_transitions == 7

    # The play file: real action name -> latent id, readable by genie-env play.
    mapping.save_play_mapping(tmp_path)
    play = load_latent_mapping(tmp_path, mapping.num_latent)
    assert play == mapping.play_mapping()
    seen = {mapping.real_action_names[a] for a in np.flatnonzero(mapping.counts.sum(0))}
    assert set(play) == seen


def test_rules_and_play_keys() -> None:
    counts = np.zeros((4, 18), dtype=np.int64)
    counts[0, :] = 5  # a latent common everywhere ("nothing happened") must not win every real action
    for z, a in ((1, 2), (2, 5), (3, 3)):  # latent 1 = UP, 2 = DOWN, 3 = RIGHT
        counts[z, a] = 20
    counts[3, 4] = 4
    names = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN"] + [f"A{i}" for i in range(12)]
    mapping = LatentActionMapping(counts, names)
    assert mapping.latent_to_real[1:] == [2, 5, 3]
    assert mapping.real_to_latent[2] == 1 and mapping.real_to_latent[5] == 2 and mapping.real_to_latent[3] == 3
    play = mapping.play_mapping()
    assert set(ARROW_ACTIONS.values()) <= set(play)  # UP, DOWN, LEFT, RIGHT and FIRE (space)
    np.testing.assert_array_equal(mapping.map_latent([1, 2, 3]), [2, 5, 3])
    with pytest.raises(ValueError, match="out of range"):
        mapping.map_latent(4)
    with pytest.raises(ValueError):
        LatentActionMapping(np.zeros((2, 3), dtype=np.int64), ["A"])


def test_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"UP": 1}))
    with pytest.raises(ValueError, match="invalid latent action mapping"):
        LatentActionMapping.load(path)


def _check_result(result: dict, episodes: int) -> None:
    assert set(result) >= RESULT_KEYS
    assert result["episodes"] == episodes and len(result["returns"]) == episodes
    assert result["ci95_low"] <= result["mean_return"] <= result["ci95_high"]
    json.dumps(result)  # serialisable


def test_real_eval_random_boxing() -> None:
    result = real_eval("random", "ALE/Boxing-v5", 2, 0, max_steps=20)
    _check_result(result, 2)
    assert result["lengths"] == [20, 20] and result["success_rate"] is None
    assert real_eval("random", "ALE/Boxing-v5", 2, 0, max_steps=20)["returns"] == result["returns"]  # seeded


def test_real_eval_random_fetch_reach() -> None:
    result = real_eval("random", "FetchReach-v4", 2, 0, max_steps=5)
    _check_result(result, 2)
    assert result["lengths"] == [5, 5]
    assert 0.0 <= result["success_rate"] <= 1.0
    lo, hi = result["success_ci95"]
    assert lo <= result["success_rate"] <= hi


class _LatentPolicy:
    """Always outputs one latent action; records what it observed."""

    def __init__(self, latent: int) -> None:
        self.latent = latent
        self.seen: list[tuple] = []

    def predict(self, obs, deterministic: bool = True):
        self.seen.append((obs.shape, obs.dtype))
        return np.array(self.latent), None


class _DictPolicy:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def predict(self, obs, deterministic: bool = True):
        self.keys = set(obs)
        assert obs["front"].shape == (64, 64, 3) and obs["front"].dtype == np.uint8
        assert obs["state"].shape == (8,) and obs["goal"].shape == (3,)
        return np.zeros(4, dtype=np.float32), None


def test_latent_policy_acts_through_the_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agents.real_eval as real_eval_module

    counts = np.zeros((8, 18), dtype=np.int64)
    counts[np.arange(8), [0, 1, 2, 3, 4, 5, 17, 12]] = 10  # latent 6 -> real 17, latent 7 -> real 12
    mapping = LatentActionMapping(counts)
    sent: list[int] = []
    make_source = real_eval_module.make_source

    def spy_source(*args, **kwargs):
        source = make_source(*args, **kwargs)
        step = source.step

        def spy_step(action):
            sent.append(int(np.asarray(action).reshape(-1)[0]))
            return step(action)

        source.step = spy_step
        return source

    monkeypatch.setattr(real_eval_module, "make_source", spy_source)
    policy = _LatentPolicy(6)
    result = real_eval(policy, "ALE/Boxing-v5", 1, 3, latent_mapping=mapping, max_steps=4)
    assert sent == [17] * 4
    assert policy.seen[0] == ((64, 64, 3), np.uint8)
    assert result["ci95_low"] is None  # one episode: no interval

    sent.clear()
    path = mapping.save(tmp_path / "m.json")
    real_eval(_LatentPolicy(7), "ALE/Boxing-v5", 1, 3, latent_mapping=path, max_steps=6)
    assert set(sent) == {12}
    with pytest.raises(ValueError, match="out of range"):
        real_eval(_LatentPolicy(9), "ALE/Boxing-v5", 1, 0, latent_mapping=mapping, max_steps=2)


def test_fetch_policy_sees_world_observations() -> None:
    policy = _DictPolicy()
    real_eval(policy, "FetchReach-v4", 1, 0, max_steps=2)
    assert policy.keys == {"front", "side", "hand", "state", "goal"}


def test_cli(atari_dataset: Path, tmp_path: Path) -> None:
    from genie_env.assets import asset_path
    from genie_env.cli import main

    out = tmp_path / "map.json"
    args = ["latent-mapping", str(asset_path("genie-boxing-tiny")), "--data", str(atari_dataset), "--episodes", "1"]
    assert main([*args, "--out", str(out), "--play-out", str(tmp_path)]) == 0
    assert LatentActionMapping.load(out).num_transitions > 0
    assert (tmp_path / LATENT_MAPPING_FILE).is_file()

    result = tmp_path / "eval.json"
    args = ["real-eval", "--policy", "random", "--env", "ALE/Boxing-v5", "--episodes", "2", "--seed", "1"]
    assert main([*args, "--max-steps", "5", "--json", str(result), "--latent-mapping", str(out)]) == 0
    data = json.loads(result.read_text())
    assert data["episodes"] == 2 and data["lengths"] == [5, 5]

    run = tmp_path / "imagine"
    args = ["imagine", "genie_env/Genie-Boxing-v0", "--out", str(run), "--steps", "16", "--num-envs", "2"]
    algo = ["--n-steps", "8", "--algo-kwargs", '{"batch_size": 16, "n_epochs": 1}', "--no-progress"]
    assert main([*args, *algo, "--maskgit-steps", "1", "--precision", "bfloat16"]) == 0
    assert (run / "policy.zip").is_file()
    assert "bfloat16" in (run / "run.json").read_text()


def test_train_in_imagination_writes_policy_curve_and_returns(tmp_path: Path) -> None:
    from agents.imagination import train_in_imagination

    result = train_in_imagination(
        "genie_env/Genie-Boxing-v0",
        tmp_path / "run",
        total_steps=64,
        num_envs=4,
        checkpoint_every=32,
        algo_kwargs={"n_steps": 16, "batch_size": 32, "n_epochs": 1},
        env_kwargs={"maskgit_steps": 1, "max_episode_steps": 6},
        progress=False,
    )
    assert result.timesteps == 64 and result.policy.is_file()
    # 4 envs x 16 steps with 6-step imagined episodes: every env finishes twice.
    assert len(result.returns) == 8 and all(length == 6 for _, _, length in result.returns)
    assert result.curve is not None and result.curve.is_file()
    assert (tmp_path / "run" / "returns.csv").read_text().count("\n") == 9
    assert list((tmp_path / "run" / "checkpoints").glob("policy_*_steps.zip"))
    with pytest.raises(ValueError, match="SAC needs continuous actions"):
        train_in_imagination("genie_env/Genie-Boxing-v0", tmp_path / "sac", algo="SAC", total_steps=8, num_envs=1)


def test_select_keys_keeps_the_named_entries(tmp_path: Path, gesim_bundle: Path) -> None:
    """--obs-keys: the policy observes only state and goal, also in terminal observations, and real_eval feeds it
    the same keys from the real simulator."""
    from agents.imagination import SelectKeys, train_in_imagination
    from envs.sb3 import SB3WorldVecEnv

    venv = SelectKeys(SB3WorldVecEnv.from_id("genie_env/GESim-v0", 2, checkpoint=str(gesim_bundle)), ["state"])
    assert list(venv.observation_space.spaces) == ["state"]
    assert set(venv.reset()) == {"state"}
    with pytest.raises(ValueError, match="subset"):
        SelectKeys(venv, ["nope"])
    venv.close()

    result = train_in_imagination(
        "genie_env/GESim-v0",
        tmp_path / "sac",
        algo="SAC",
        total_steps=16,
        num_envs=2,
        checkpoint_every=0,
        algo_kwargs={"learning_starts": 4, "batch_size": 8},
        env_kwargs={"checkpoint": str(gesim_bundle), "denoise_steps": 1, "max_episode_steps": 4},
        observation_keys=["state", "goal"],
        progress=False,
    )
    assert result.timesteps == 16 and len(result.returns) == 4  # 2 envs x 8 steps, 4-step episodes
    from stable_baselines3 import SAC

    policy = SAC.load(result.policy, device="cpu")
    assert set(policy.observation_space.spaces) == {"state", "goal"}
    out = real_eval(policy, "FetchPush-v4", 2, 0, max_steps=3)
    assert out["episodes"] == 2 and out["lengths"] == [3, 3]
