"""Record Atari Boxing, train a Genie world model on it with our engine, and step it as a Gymnasium env.

The three Genie stages (video tokenizer, latent action model, MaskGIT dynamics) train one after the other on the
recording, then the pipeline assembles a bundle; a start-state bank cut from the same recording makes it an env.
At the default settings this is a smoke-sized run (minutes on 2 CPU cores); the shipped genie-boxing-tiny took
2,000 steps per stage (see its model card).

    python examples/train_world_model.py --out genie-run --episodes 2 --steps 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

import genie_env  # noqa: F401  (registers the genie_env/... ids)
from genie_env.data.collect import collect
from genie_env.start_states import START_STATES_FILE, build_start_states
from genie_env.viz import save_png, strip, upscale
from training.pipeline import train_genie


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("genie-run"), help="output folder (new)")
    parser.add_argument("--episodes", type=int, default=2, help="Boxing episodes to record")
    parser.add_argument("--max-steps", type=int, default=60, help="steps per recorded episode")
    parser.add_argument("--steps", type=int, default=20, help="training steps per stage")
    args = parser.parse_args()

    # 1. Record: 64x64 frames, actions, rewards, in our LeRobot layout.
    data = args.out / "boxing"
    stats = collect("ALE/Boxing-v5", args.episodes, data, seed=0, max_steps=args.max_steps, progress=False)
    print(f"recorded {stats.frames} frames of ALE/Boxing-v5")

    # 2. Train tokenizer -> LAM -> dynamics with one engine (checkpoints, TensorBoard, exact resume), then bundle.
    settings = [f"train.steps={args.steps}", "train.batch_size=4", "train.checkpoint_every=0", "train.lr=1e-3"]
    bundle = train_genie(data, args.out / "runs", overrides=settings, progress=False)

    # 3. A start-state bank (real prompt frames) turns the bundle into an environment.
    build_start_states(data, prompt_frames=2).save(bundle / START_STATES_FILE)
    env = gym.make("genie_env/Genie-v0", checkpoint=str(bundle), maskgit_steps=2)
    obs, info = env.reset(seed=0)
    frames = [obs]
    for _ in range(6):
        obs, *_ = env.step(env.action_space.sample())
        frames.append(obs)
    env.close()
    png = save_png(args.out / "stepped.png", upscale(strip(np.stack(frames), 7), 2))
    print(f"world model bundle {bundle}: {env.action_space.n} latent actions, stepped 6 times -> {png}")


if __name__ == "__main__":
    main()
