"""Train an agent only inside a learned world, then run it in the real simulator, against a random policy.

SAC learns FetchReach inside genie_env/GESim-FetchReach-v0 (our SB3 VecEnv batches the worlds), observing the
world's end-effector state and goal; real_eval then runs the policy in the real MuJoCo FetchReach-v4 with the same
observations, fixed seeds and 95 % intervals. The shipped policy (genie_env/assets/policies) is this recipe at
12,000 steps (100 % real success over 100 episodes).

    python examples/imagine_then_reality.py --out reach --steps 3000 --episodes 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.compare import Entry, comparison_plot, table
from agents.imagination import train_in_imagination
from agents.real_eval import real_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reach"), help="output folder")
    parser.add_argument("--steps", type=int, default=3000, help="imagined environment steps")
    parser.add_argument("--episodes", type=int, default=20, help="real evaluation episodes")
    args = parser.parse_args()

    # 1. Train in imagination only (1 Euler step per world step: the policy reads state and goal, not pixels).
    run = train_in_imagination(
        "genie_env/GESim-FetchReach-v0",
        args.out / "imagine",
        algo="SAC",
        total_steps=args.steps,
        num_envs=8,
        env_kwargs={"denoise_steps": 1, "reward_type": "dense"},
        observation_keys=["state", "goal"],
        algo_kwargs={"learning_starts": min(1000, args.steps // 2), "gamma": 0.95, "batch_size": 256},
        checkpoint_every=0,
        progress=False,
    )
    print(f"trained {run.timesteps} imagined steps in {run.seconds:.0f} s -> {run.policy}")

    # 2. Evaluate in reality, beside a random policy, and compare.
    entries = []
    for label, policy in (("world", run.policy), ("random", "random")):
        result = real_eval(policy, "FetchReach-v4", args.episodes, seed=0)
        path = args.out / f"eval_{label}.json"
        path.write_text(json.dumps(result, indent=2))
        entries.append(Entry.load(label, path, args.out / "imagine" if label == "world" else None))
        print(f"{label}: real success {100 * result['success_rate']:.0f}%, mean return {result['mean_return']:.2f}")
    print(table(entries))
    print(f"-> {comparison_plot(entries, args.out / 'compare.png', title='FetchReach-v4')}")


if __name__ == "__main__":
    main()
