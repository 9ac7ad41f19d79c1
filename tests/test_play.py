"""``genie-env play`` driven head-less with scripted key events (SDL dummy driver, set in conftest).

Genie runs the shipped ``genie-boxing-tiny`` bundle (1 MaskGIT step, argmax sampling: deterministic); GE-Sim runs
an untrained tiny bundle with a start bank cut from the FetchPush fixture (the tip state comes from the fitted
kinematics, so the keys' effect on it does not depend on training).
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from envs.keymap import LATENT_MAPPING_FILE, Keymap, check_latent_mapping, load_latent_mapping
from envs.play import load_policy, overlay_trajectory_maps, parse_scripted_keys, play
from genie_env.assets import asset_path
from genie_env.cli import main
from genie_env.data.lerobot import LeRobotDataset

GENIE = "genie_env/Genie-Boxing-v0"
GENIE_FAST = {"maskgit_steps": 1}


def test_genie_pause_step_reset_sampler_keys_and_recordings(tmp_path: Path) -> None:
    keys = [(0, "3"), (2, "p"), (3, "n"), (5, "p"), (6, "r"), (7, "]")]
    result = play(
        GENIE,
        steps=9,
        scripted_keys=keys,
        record=tmp_path / "play.mp4",
        record_dataset=tmp_path / "played",
        env_kwargs=GENIE_FAST,
        size=2,
    )
    # Iterations: 0 step, 1 step, 2 pause, 3 single step, 4 paused, 5 resume + step, 6 reset, 7 step, 8 step.
    assert result.iterations == 9 and result.steps == 6 and result.episodes == 2
    assert result.seeds == [0, 1] and len(result.returns) == 2
    assert result.frames == 1 + result.steps + 1  # the first reset, every step, the R reset
    assert result.last_info["maskgit_steps"] == 2  # "]" raised it live

    video = iio.imread(result.video, index=None)
    assert video.shape == (result.frames, *result.canvas_shape)

    data = LeRobotDataset(result.dataset)
    assert data.num_episodes == 2
    assert [data.episode_length(i) for i in range(2)] == [5, 3]  # 4 and 2 steps, plus the final frame
    first = data.load_episode(0)
    assert first["action"][:, 0].tolist() == [2, 2, 2, 2, 0]  # key "3" is latent 2; the last row has no action
    assert first["truncated"][:, 0].tolist() == [False] * 4 + [True]  # cut by R
    assert first["observation.images.screen"].shape == (5, 64, 64, 3)
    assert data.info["env_id"] == GENIE


def test_genie_latent_keys_give_different_frames_from_the_same_seed(tmp_path: Path) -> None:
    runs = {}
    for key in ("1", "6"):
        runs[key] = play(GENIE, steps=3, scripted_keys=[(0, key)], env_kwargs=GENIE_FAST, seed=3)
    again = play(GENIE, steps=3, scripted_keys=[(0, "1")], env_kwargs=GENIE_FAST, seed=3)
    np.testing.assert_array_equal(runs["1"].last_obs, again.last_obs)
    assert not np.array_equal(runs["1"].last_obs, runs["6"].last_obs)


def test_genie_arrow_keys_follow_a_shipped_latent_mapping(tmp_path: Path) -> None:
    bundle = tmp_path / "genie"
    bundle.mkdir()
    for entry in asset_path("genie-boxing-tiny").iterdir():
        if entry.name != LATENT_MAPPING_FILE:  # (writing through a link would change the shipped file)
            (bundle / entry.name).symlink_to(entry)
    (bundle / LATENT_MAPPING_FILE).write_text(json.dumps({"UP": 5, "fire": 7}))
    result = play(
        "genie_env/Genie-v0",
        steps=3,
        scripted_keys=[(0, "up"), (1, "space"), (2, "left")],  # left is not mapped: the latent stays 7
        record_dataset=tmp_path / "played",
        env_kwargs={"checkpoint": str(bundle), **GENIE_FAST},
    )
    assert LeRobotDataset(result.dataset).load_episode(0)["action"][:3, 0].tolist() == [5, 7, 7]


def test_gesim_keys_move_the_tip_toggle_gripper_and_overlay(tmp_path: Path, gesim_bundle: Path) -> None:
    kwargs = {"checkpoint": str(gesim_bundle), "denoise_steps": 1}
    keys = [(0, "w"), (1, "w"), (2, "space"), (2, "t"), (3, "s"), (3, "q")]
    result = play(
        "genie_env/GESim-v0",
        steps=4,
        scripted_keys=keys,
        record=tmp_path / "gesim.mp4",
        record_dataset=tmp_path / "played",
        env_kwargs=kwargs,
        size=1,
    )
    assert result.steps == 4 and result.frames == 5
    video = iio.imread(result.video, index=None)
    assert video.shape == (5, *result.canvas_shape)

    episode = LeRobotDataset(result.dataset).load_episode(0)
    actions, state = episode["action"], episode["observation.state"]
    np.testing.assert_allclose(actions[:4], [[1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, -1], [-1, 0, 1, -1]])
    assert state[1, 0] > state[0, 0] and state[2, 0] > state[1, 0]  # W: +x
    assert state[4, 0] < state[3, 0] and state[4, 2] > state[3, 2]  # S: -x, Q: +z
    for camera in ("front", "side", "hand"):
        assert episode[f"observation.images.{camera}"].shape == (5, 64, 64, 3)
        assert episode[f"observation.cameras.{camera}.extrinsics"].shape == (5, 4, 4)
    assert LeRobotDataset(result.dataset).intrinsics("front") is not None

    env = gym.make("genie_env/GESim-v0", **kwargs)
    env.reset(seed=0)
    core = env.unwrapped.core
    views = core.frames()[0]
    drawn = overlay_trajectory_maps(core, views)
    assert drawn.shape == views.shape and not torch.equal(drawn, views)  # the tip's disc is blended in
    env.close()


@pytest.mark.parametrize("env_id", ["genie_env/GESim-FetchPush-v0", "genie_env/GESim-FetchReach-v0"])
def test_shipped_gesim_worlds_play_recorded_and_answer_the_keys(tmp_path: Path, env_id: str) -> None:
    """Each shipped GE-Sim world in the head-less loop: the keys move the tip, the drawn views follow, both record."""
    fast = {"denoise_steps": 1}
    runs = {
        key: play(env_id, steps=3, scripted_keys=[(0, key)], env_kwargs=fast, seed=2, size=1) for key in ("w", "s")
    }
    forward, back = runs["w"].last_obs, runs["s"].last_obs
    assert forward["state"][0] > back["state"][0]  # W is +x, S is -x
    assert not np.array_equal(forward["front"], back["front"])  # the DiT drew different frames for them

    result = play(
        env_id,
        steps=3,
        scripted_keys=[(0, "d"), (1, "space")],
        record=tmp_path / "play.mp4",
        record_dataset=tmp_path / "played",
        env_kwargs=fast,
        seed=2,
        size=1,
    )
    assert iio.imread(result.video, index=None).shape == (4, *result.canvas_shape)
    episode = LeRobotDataset(result.dataset).load_episode(0)
    # D is -y for the step it is pressed; Space shuts the gripper until pressed again.
    np.testing.assert_allclose(episode["action"][:3], [[0, -1, 0, 1], [0, 0, 0, -1], [0, 0, 0, -1]])
    assert episode["observation.images.hand"].shape == (4, 64, 64, 3)


def test_gesim_real_twin_starts_in_the_same_state_and_follows_the_actions(tmp_path: Path, gesim_bundle: Path) -> None:
    """--real: MuJoCo is reset into the world's recorded start and given the same actions, in a second row."""
    kwargs = {"checkpoint": str(gesim_bundle), "denoise_steps": 1}
    keys = [(0, "w"), (1, "w"), (2, "d"), (3, "q")]
    alone = play("genie_env/GESim-v0", steps=1, env_kwargs=kwargs, size=1)
    result = play(
        "genie_env/GESim-v0", steps=4, scripted_keys=keys, record=tmp_path / "twin.mp4", env_kwargs=kwargs, size=1
    )
    twin = play(
        "genie_env/GESim-v0",
        steps=4,
        scripted_keys=keys,
        record=tmp_path / "twin.mp4",
        env_kwargs=kwargs,
        size=1,
        real=True,
    )
    assert len(twin.twin) == 5 and not result.twin
    # Same start: the world's first frame is the recorded frame the real simulator renders again (mp4 loss only).
    assert twin.twin[0].psnr_db > 30 and twin.twin[0].tip_gap_m < 1e-4
    # The world's tip follows the fitted kinematics; MuJoCo's follows the same keys within a couple of centimetres.
    assert all(step.tip_gap_m < 0.03 for step in twin.twin), [step.tip_gap_m for step in twin.twin]
    assert twin.canvas_shape[0] > alone.canvas_shape[0] + 64  # a second row of views
    assert iio.imread(twin.video, index=None).shape == (5, *twin.canvas_shape)
    np.testing.assert_array_equal(twin.last_obs["state"], result.last_obs["state"])  # the world is untouched


def test_genie_real_twin_replays_the_lead_in_and_plays_the_chosen_real_actions(tmp_path: Path) -> None:
    """The real Boxing is reset with the start's seed and its recorded lead-in, landing exactly on the bank's last
    prompt frame; arrows drive it with the real action they name, number keys through the shipped mapping."""
    from envs.real_twin import RealTwin
    from genie_env.start_states import StartStates

    bank = StartStates.load(asset_path("genie-boxing-tiny"))
    env = gym.make(GENIE, **GENIE_FAST)
    _, info = env.reset(seed=4)
    mapping = load_latent_mapping(asset_path("genie-boxing-tiny"), 8)
    twin = RealTwin(env.unwrapped.core, mapping)
    start = int(info["start"])
    first = twin.reset(start)
    recorded = bank.frames[start, 0, -1].numpy().astype(int)  # decoded from the recording's video
    assert np.abs(first.views.astype(int) - recorded).max() <= 2  # the same state, up to video coding
    assert np.abs(twin.source.reset(bank.seeds[start])["observation.images.screen"].astype(int) - recorded).max() > 50
    twin.reset(start)  # (the line above shows that without the lead-in the state differs)
    assert first.psnr_db > 25 and first.tip_gap_m is None  # the world shows the tokenizer's reconstruction
    up = twin.step(mapping["UP"], real_action="UP")
    latent = twin.step(mapping["RIGHT"])  # latent chosen directly: the first real action mapped to it
    assert (up.action, latent.action) == ("UP", twin.meanings[twin.latent_to_real[mapping["RIGHT"]]])
    twin.close()
    env.close()

    keys = [(0, "up"), (2, "1")]
    result = play(GENIE, steps=4, scripted_keys=keys, env_kwargs=GENIE_FAST, real=True, record=tmp_path / "t.mp4")
    assert len(result.twin) == 5 and [t.action for t in result.twin[1:3]] == ["UP", "UP"]
    assert result.twin[3].action == twin.meanings[twin.latent_to_real[0]]
    assert iio.imread(result.video, index=None).shape == (5, *result.canvas_shape)

    bare = tmp_path / "bare"
    bare.mkdir()
    for entry in asset_path("genie-boxing-tiny").iterdir():
        if entry.name != LATENT_MAPPING_FILE:
            (bare / entry.name).symlink_to(entry)
    with pytest.raises(ValueError, match="latent mapping"):
        play("genie_env/Genie-v0", steps=1, env_kwargs={"checkpoint": str(bare), **GENIE_FAST}, real=True)


def test_policy_takes_over_with_tab_and_random_play_headless(tmp_path: Path) -> None:
    class Constant:
        def predict(self, obs: object, deterministic: bool = True) -> tuple[np.ndarray, None]:
            return np.array(4), None

    result = play(
        GENIE,
        steps=4,
        scripted_keys=[(0, "2"), (2, "tab")],
        policy=Constant(),
        record_dataset=tmp_path / "played",
        env_kwargs=GENIE_FAST,
    )
    assert LeRobotDataset(result.dataset).load_episode(0)["action"][:4, 0].tolist() == [1, 1, 4, 4]
    random = play(GENIE, steps=2, env_kwargs=GENIE_FAST)  # no keys, no policy: random actions
    assert random.steps == 2


def test_window_loop_runs_on_the_dummy_display() -> None:
    """The windowed path (HumanWindow, pygame events and key state) on SDL's dummy driver."""
    result = play(GENIE, steps=2, headless=False, fps=1000, scripted_keys=[(0, "2")], env_kwargs=GENIE_FAST)
    assert result.steps == 2 and result.frames == 3


def test_sb3_zip_policy_loads_and_plays(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    class Spaces(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        action_space = gym.spaces.Discrete(8)

    PPO("CnnPolicy", Spaces(), n_steps=8, batch_size=8, device="cpu").save(tmp_path / "ppo.zip")
    assert load_policy(tmp_path / "ppo.zip").observation_space is not None
    result = play(GENIE, steps=1, policy=str(tmp_path / "ppo.zip"), env_kwargs=GENIE_FAST)
    assert result.steps == 1
    with pytest.raises(FileNotFoundError, match="no policy"):
        load_policy(tmp_path / "missing.zip")


def test_cli_play_headless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mp4"
    argv = ["play", "Genie-Boxing-v0", "--steps", "2", "--keys", "0:4", "--maskgit-steps", "1", "--size", "1"]
    assert main([*argv, "--record", str(out), "--headless", "--precision", "bfloat16"]) == 0
    assert "2 steps" in capsys.readouterr().out
    assert iio.imread(out, index=None).shape[0] == 3
    assert main(["play", GENIE, "--steps", "1", "--denoise-steps", "2"]) == 2
    assert "does not apply" in capsys.readouterr().err


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="needs steps"):
        play(GENIE, headless=True)
    with pytest.raises(ValueError, match=r"\.mp4"):
        play(GENIE, steps=1, record="out.avi")
    with pytest.raises(ValueError, match="not bound"):
        play(GENIE, steps=1, scripted_keys=[(0, "w")], env_kwargs=GENIE_FAST)
    with pytest.raises(ValueError, match="ITERATION:KEY"):
        parse_scripted_keys("w")
    assert parse_scripted_keys("0:w, 3:space") == [(0, "w"), (3, "space")]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        check_latent_mapping({"UP": 9}, 8)


def test_keymaps(tmp_path: Path) -> None:
    genie = Keymap.genie(8)
    assert genie.get("8").value == 7 and genie.get("9") is None and genie.latent_for("UP") is None
    assert "no latent mapping" in genie.help_text()
    gesim = Keymap.gesim()
    np.testing.assert_array_equal(gesim.motion({"w", "s", "a", "q"}), [0, 1, 1])
    assert load_latent_mapping(tmp_path, 8) is None
    (tmp_path / LATENT_MAPPING_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=LATENT_MAPPING_FILE):
        load_latent_mapping(tmp_path, 8)
