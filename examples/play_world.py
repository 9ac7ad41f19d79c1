"""Play a learned world head-less with scripted keys, beside the real simulator, and keep the recording.

Drives `genie-env play`'s loop (the same one the pygame window runs) on GESim-FetchReach-v0: W/A/S/D/Q/E move the
end effector, Space toggles the gripper. With real=True MuJoCo starts from the same recorded state and gets the
same actions, so the PSNR between the imagined and the real views shows the world's drift step by step. The play
is written as an mp4 and as a dataset in our layout (human play becomes training data).

    python examples/play_world.py --out play --steps 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.play import play
from genie_env.data.lerobot import LeRobotDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("play"), help="output folder")
    parser.add_argument("--steps", type=int, default=12, help="loop iterations")
    parser.add_argument("--denoise-steps", type=int, default=None, help="Euler steps (default: the bundle's)")
    args = parser.parse_args()

    # Forward (W) for a third of the steps, then up (Q), then shut the gripper (Space) and go left (A).
    third = max(args.steps // 3, 1)
    keys = [(i, "w") for i in range(third)] + [(i, "q") for i in range(third, 2 * third)]
    keys += [(2 * third, "space")] + [(i, "a") for i in range(2 * third, args.steps)]
    args.out.mkdir(parents=True, exist_ok=True)
    result = play(
        "genie_env/GESim-FetchReach-v0",
        steps=args.steps,
        scripted_keys=keys,
        record=args.out / "play.mp4",
        record_dataset=args.out / "played",
        env_kwargs={} if args.denoise_steps is None else {"denoise_steps": args.denoise_steps},
        real=True,
        size=2,
        headless=True,
    )
    print(f"played {result.steps} steps, {result.frames} frames -> {result.video}")
    for i, twin in enumerate(result.twin):
        print(f"  step {i:2d}: world vs MuJoCo PSNR {twin.psnr_db:5.2f} dB, tip gap {1000 * twin.tip_gap_m:5.1f} mm")
    data = LeRobotDataset(result.dataset)
    print(f"dataset {result.dataset}: {data.num_episodes} episode(s), {data.episode_length(0)} frames")


if __name__ == "__main__":
    main()
