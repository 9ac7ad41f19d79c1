"""Use a learned world as a Gymnasium environment, then train a stable-baselines3 agent inside it.

Plays Genie-Boxing-v0 (the shipped tiny Genie) with random latent actions and writes the frames as a PNG strip;
then runs PPO on a batch of the same worlds through our SB3 VecEnv and prints what it saw.

    python examples/world_env.py --out world-env
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import genie_env  # noqa: F401  (registers the genie_env/... ids)
from envs.sb3 import SB3WorldVecEnv
from genie_env.viz import save_png, strip, upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("world-env"), help="output folder")
    parser.add_argument("--steps", type=int, default=24, help="steps to play")
    parser.add_argument("--ppo-steps", type=int, default=256, help="PPO timesteps (0: skip)")
    parser.add_argument("--maskgit-steps", type=int, default=None, help="MaskGIT steps (default: the bundle's)")
    args = parser.parse_args()

    # 1. One env, like any Gymnasium env: discrete latent actions in, rendered 64x64 frames out.
    env = gym.make("genie_env/Genie-Boxing-v0", render_mode="rgb_array", maskgit_steps=args.maskgit_steps)
    obs, info = env.reset(seed=0)
    frames, total = [obs], 0.0
    for _ in range(args.steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        frames.append(obs)
        total += reward
        if terminated or truncated:
            break
    env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    png = save_png(args.out / "played.png", upscale(strip(np.stack(frames), 8), 2))
    print(f"played {len(frames) - 1} steps of {info['model_id']}: return {total:.3f}, last step {info['timing']}")
    print(f"wrote {png}")

    # 2. A batch of worlds for SB3: same-step autoreset, terminal_observation and TimeLimit.truncated in infos.
    if args.ppo_steps:
        venv = SB3WorldVecEnv.from_id("genie_env/Genie-Boxing-v0", num_envs=4, maskgit_steps=args.maskgit_steps)
        model = PPO("CnnPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=args.ppo_steps)
        print(f"PPO trained {model.num_timesteps} timesteps inside the world model")
        venv.close()


if __name__ == "__main__":
    main()
