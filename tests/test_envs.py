"""World-model environments: registration, Gymnasium / SB3 contracts, autoreset, seeding, bad input, memory bounds.

Genie envs run the shipped ``genie-boxing-tiny`` bundle; GE-Sim envs run an untrained tiny bundle with a start
bank cut from the FetchPush fixture (the contracts do not depend on training).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import genie_env
from envs.genie_world import GenieCore, build_genie_core
from envs.gesim_world import GeSimCore
from envs.sb3 import SB3WorldVecEnv
from genie_env.assets import ASSETS_DIR
from genie_env.models.gesim.world import GeSimWorldModel
from genie_env.registration import ENV_IDS, NAMESPACE
from genie_env.start_states import StartStates

FAST = {"maskgit_steps": 2, "temperature": 1.0}  # sampled (so seeds matter), and quick


def _shipped(env_id: str) -> bool:
    checkpoint = ENV_IDS[env_id.split("/")[1]].get("kwargs", {}).get("checkpoint")
    return checkpoint is None or (ASSETS_DIR / checkpoint / "world_model.json").is_file()


def _make_kwargs(env_id: str, gesim_bundle: Path) -> dict:
    name = env_id.split("/")[1]
    if name == "GESim-v0":
        return {"checkpoint": str(gesim_bundle)}
    if name.startswith("Genie"):
        return dict(FAST)
    if name.startswith("GESim-Fetch"):
        return {"denoise_steps": 2}  # the shipped bundles' contracts, at a fifth of their default sampling cost
    return {}


ALL_IDS = [f"{NAMESPACE}/{name}" for name in ENV_IDS]


def test_every_id_is_registered_on_import() -> None:
    assert genie_env.__version__
    for env_id in ALL_IDS:
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)
        assert spec.max_episode_steps is not None and spec.max_episode_steps >= 2


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_and_sb3_check_env(env_id: str, gesim_bundle: Path) -> None:
    if not _shipped(env_id):
        pytest.skip(f"{env_id}: its checkpoint is not shipped yet")
    env = gym.make(env_id, **_make_kwargs(env_id, gesim_bundle))
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_make_vec_and_ppo_through_our_vecenv(env_id: str, gesim_bundle: Path) -> None:
    if not _shipped(env_id):
        pytest.skip(f"{env_id}: its checkpoint is not shipped yet")
    kwargs = _make_kwargs(env_id, gesim_bundle)
    vector = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **kwargs)
    assert vector.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = vector.reset(seed=0)
    assert vector.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = vector.step(vector.action_space.sample())
    assert vector.observation_space.contains(obs) and reward.shape == terminated.shape == truncated.shape == (4,)
    vector.close()

    venv = SB3WorldVecEnv.from_id(env_id, num_envs=4, **kwargs)
    policy = "MultiInputPolicy" if isinstance(venv.observation_space, gym.spaces.Dict) else "CnnPolicy"
    model = PPO(policy, venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    venv.close()


def test_same_seed_same_observations_for_50_steps() -> None:
    envs = [gym.make("genie_env/Genie-Boxing-v0", **FAST) for _ in range(3)]
    first = [env.reset(seed=7 if i < 2 else 8)[0] for i, env in enumerate(envs)]
    np.testing.assert_array_equal(first[0], first[1])
    actions = np.random.default_rng(0).integers(0, 8, size=50)
    differs = not np.array_equal(first[0], first[2])
    for action in actions:
        a, b, c = (env.step(int(action))[0] for env in envs)
        np.testing.assert_array_equal(a, b)
        differs |= not np.array_equal(a, c)
    assert differs, "a different seed should give a different rollout"


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.mark.parametrize("env_id", ["genie_env/Genie-Boxing-v0", "genie_env/GESim-v0"])
def test_bfloat16_steps_draw_what_float32_draws_and_stay_seeded(env_id: str, gesim_bundle: Path) -> None:
    """``precision="bfloat16"`` changes the arithmetic, not the world: frames near float32's, and seeded.

    Near: above 30 dB. A sampled token that flips under the other rounding costs one 4x4 patch (about 37 dB
    here); a frame of another rollout is about 23 dB (Boxing's copy-last PSNR at t=4).
    """
    kwargs = _make_kwargs(env_id, gesim_bundle) | ({"denoise_steps": 2} if "GESim" in env_id else {})
    envs = {p: gym.make(env_id, precision=p, **kwargs) for p in ("float32", "bfloat16")}
    twin = gym.make(env_id, precision="bfloat16", **kwargs)
    obs = {p: env.reset(seed=5)[0] for p, env in envs.items()}
    twin_obs = twin.reset(seed=5)[0]
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = envs["float32"].action_space.sample() if "GESim" in env_id else int(rng.integers(0, 8))
        for p in envs:
            obs[p], _, _, _, info = envs[p].step(action)
        twin_obs = twin.step(action)[0]
        assert info["precision"] == "bfloat16"
        views = (
            [k for k in obs["float32"] if k not in ("state", "goal")] if isinstance(obs["float32"], dict) else [None]
        )
        for view in views:
            f32, b16, again = (o if view is None else o[view] for o in (obs["float32"], obs["bfloat16"], twin_obs))
            assert b16.dtype == np.uint8
            np.testing.assert_array_equal(b16, again)
            assert _psnr_u8(f32, b16) > 30.0
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'float16'"):
        gym.make(env_id, precision="float16", **kwargs)


def test_restarting_one_env_leaves_it_as_a_fresh_env() -> None:
    """The KV caches of a restarting env are replaced exactly: its frames match a fresh single env's."""
    torch.manual_seed(0)
    batch = build_genie_core("genie-boxing-tiny", 3, maskgit_steps=2, temperature=0.0)
    single = build_genie_core("genie-boxing-tiny", 1, maskgit_steps=2, temperature=0.0)
    batch.restart(np.array([0, 1, 2]), np.array([0, 1, 2]))
    for action in (1, 5, 3, 7, 2):
        batch.step(torch.full((3,), action))
    batch.restart(np.array([1]), np.array([4]))
    single.restart(np.array([0]), np.array([4]))
    torch.testing.assert_close(batch.observation()["image"][1], single.observation()["image"][0])
    for action in (0, 6, 6, 2, 4, 1, 3, 5, 7, 0):
        batch.step(torch.tensor([3, action, 5]))
        single.step(torch.tensor([action]))
        torch.testing.assert_close(
            batch.observation()["image"][1], single.observation()["image"][0], atol=1e-4, rtol=0
        )


def test_vector_env_next_step_autoreset_and_truncation() -> None:
    vector = gym.make_vec(
        "genie_env/Genie-Boxing-v0", num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=2, **FAST
    )
    vector.reset(seed=0)
    _, _, _, truncated, info = vector.step(np.array([0, 1]))
    assert not truncated.any() and info["step"].tolist() == [1, 1]
    _, _, _, truncated, info = vector.step(np.array([0, 1]))
    assert truncated.all() and info["step"].tolist() == [2, 2]
    obs, reward, terminated, truncated, info = vector.step(np.array([0, 1]))  # the reset step: action ignored
    assert info["step"].tolist() == [0, 0] and not (terminated.any() or truncated.any())
    assert reward.tolist() == [0.0, 0.0]
    vector.close()
    vector.close()


def test_sb3_vecenv_same_step_autoreset() -> None:
    venv = SB3WorldVecEnv.from_id("genie_env/Genie-Boxing-v0", num_envs=2, max_episode_steps=2, **FAST)
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    _, _, dones, infos = venv.step(np.array([1, 2]))
    assert not dones.any()
    obs, _, dones, infos = venv.step(np.array([1, 2]))
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == (64, 64, 3)
        assert not np.array_equal(info["terminal_observation"], obs[i]) or True  # obs is the new episode's start
    assert venv.core is not None and venv.core.steps.tolist() == [0, 0]
    venv.close()
    venv.close()


def test_bad_input_is_refused_clearly(gesim_bundle: Path) -> None:
    env = gym.make("genie_env/Genie-Boxing-v0", **FAST).unwrapped
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer ids"):
        env.step(1.0)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        env.step(8)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="options\\['start'\\]"):
        env.reset(options={"start": 10_000})
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()

    gesim = gym.make("genie_env/GESim-v0", checkpoint=str(gesim_bundle)).unwrapped
    gesim.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        gesim.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="must lie in"):
        gesim.step(np.array([1.5, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        gesim.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no start states for task"):
        GeSimCore(gesim.core.world, StartStates.load(gesim_bundle), task="FetchReach-v4")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"reward_type must be one of \('sparse', 'dense'\), got 'shaped'"):
        GeSimCore(gesim.core.world, StartStates.load(gesim_bundle), reward_type="shaped")  # type: ignore[arg-type]
    gesim.close()
    with pytest.raises(Exception, match="no world model"):
        gym.make("genie_env/Genie-v0", checkpoint="/nonexistent/bundle")


def test_genie_memory_is_bounded_and_frames_finite() -> None:
    core: GenieCore = build_genie_core("genie-boxing-tiny", 2, maskgit_steps=1, temperature=1.0)
    core.restart(np.array([0, 1]), np.array([0, 1]))
    window = core.world.dynamics.config.context_frames
    sizes = []
    for step in range(3 * window):
        core.step(torch.tensor([step % 8, (step * 3) % 8]))
        sizes.append((core.sampler.cache.num_frames, core.decode_cache.num_frames))  # type: ignore[union-attr]
    assert sizes[-1] == sizes[window] == (window - 1, core.world.tokenizer.config.context_frames - 1)
    assert torch.isfinite(core.current).all()


def test_gesim_env_moves_the_tip_and_the_hand_camera(gesim_bundle: Path) -> None:
    env = gym.make("genie_env/GESim-v0", checkpoint=str(gesim_bundle)).unwrapped
    obs, _ = env.reset(seed=1)
    core: GeSimCore = env.core  # type: ignore[assignment]
    start_cameras = core._cameras(core.state).clone()
    gain = np.array(core.kinematics.gain)
    obs2, _, _, _, info = env.step(np.array([0.5, -0.5, 0.0, 0.0], np.float32))
    assert info["memory_indices"].tolist() == [0, 0, 0]  # only the start frame exists before the first step
    expected = np.clip(obs["state"][:3] + gain * [0.5, -0.5, 0.0], core.kinematics.low, core.kinematics.high)
    np.testing.assert_allclose(obs2["state"][:3], expected, atol=1e-6)
    moved = core._cameras(core.state)
    hand, front = core.cameras.index("hand"), core.cameras.index("front")
    torch.testing.assert_close(moved[0, front], start_cameras[0, front])
    shift = torch.as_tensor(obs2["state"][:3] - obs["state"][:3])
    torch.testing.assert_close(moved[0, hand, :3, 3] - start_cameras[0, hand, :3, 3], shift, atol=1e-6, rtol=0)
    for _ in range(40):  # pushing into the workspace boundary stays inside it
        obs2, *_ = env.step(np.array([1.0, 1.0, 1.0, 0.0], np.float32))
    assert env.observation_space.contains(obs2)
    np.testing.assert_allclose(obs2["state"][:3], core.kinematics.high, atol=1e-6)
    env.close()


@pytest.mark.skipif(not _shipped("genie_env/GESim-FetchReach-v0"), reason="checkpoint not shipped")
def test_shipped_fetch_reach_rewards_the_tip_reaching_the_goal() -> None:
    """A proportional controller on (goal - tip) reaches the goal: Fetch's reward turns from -1 to 0, the dense one
    rises, and ``is_success`` is set; the goal stays the episode's recorded one."""
    sparse = gym.make("genie_env/GESim-FetchReach-v0", denoise_steps=1)
    dense = gym.make("genie_env/GESim-FetchReach-v0", denoise_steps=1, reward_type="dense")
    for env in (sparse, dense):
        seed = 0
        obs, _ = env.reset(seed=seed)
        while np.linalg.norm(obs["goal"] - obs["state"][:3]) < 0.1:  # a start at least 10 cm from its goal
            seed += 1
            obs, _ = env.reset(seed=seed)
        goal, rewards, infos = obs["goal"].copy(), [], []
        for _ in range(12):
            action = np.clip(np.append((obs["goal"] - obs["state"][:3]) * 20, 0.0), -1, 1).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(float(reward))
            infos.append(info)
        np.testing.assert_array_equal(obs["goal"], goal)
        distances = [float(i["goal_distance"]) for i in infos]
        assert distances[-1] < 0.05 < distances[0] and bool(infos[-1]["is_success"])
        if env is sparse:
            assert rewards[0] == -1.0 and rewards[-1] == 0.0
        else:
            np.testing.assert_allclose(rewards, [-d for d in distances], rtol=1e-5)
        env.close()


def test_gesim_memory_is_a_bounded_ring_with_the_newest_frame(gesim_bundle: Path) -> None:
    world = GeSimWorldModel.from_pretrained(gesim_bundle)
    core = GeSimCore(world, StartStates.load(gesim_bundle), 2, memory_span=5)
    core.restart(np.array([0, 1]), np.array([0, 1]))
    for step in range(12):
        if step == 4:
            core.restart(np.array([1]), np.array([2]))
        _, maps = core._memory()
        # The newest memory frame is every env's current frame: its kept maps are those of the current tip pose.
        cameras = core._cameras(core.state)[:, :, None]
        now = world.frame_maps(core.state[:, None], cameras, core.intrinsics, core.latent_size)
        torch.testing.assert_close(maps[:, :, :, -1:], now)
        core.step(torch.zeros(2, 4))
    assert core.count.tolist() == [13, 9]
    assert core.latents.shape[1] == 5 and torch.isfinite(core.current).all()


@pytest.mark.slow
def test_ten_thousand_steps_keep_memory_flat_and_frames_finite() -> None:
    """The long-rollout check of the env issue: RSS after 10,000 steps stays within 64 MB of RSS after 1,000."""
    import resource

    env = gym.make("genie_env/Genie-Boxing-v0", max_episode_steps=None, maskgit_steps=1).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for step in range(10_000):
        obs, *_ = env.step(int(rng.integers(0, 8)))
        if step == 999:
            after_1000 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - after_1000 < 64 * 1024
    assert obs.dtype == np.uint8 and env.core is not None and torch.isfinite(env.core.current).all()
    env.close()
