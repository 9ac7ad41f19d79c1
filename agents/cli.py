"""``genie-env imagine``, ``real-train``, ``real-eval``, ``compare`` and ``latent-mapping``
(entry point ``genie_env.commands: agents``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genie_env.data.lerobot import atomic_write_text

LATENT_MAPPING_EXAMPLES = """\
examples:
  genie-env latent-mapping genie_env/assets/genie-boxing-tiny --data data/boxing_train --episodes 10 --out map.json
  genie-env latent-mapping BUNDLE --data data/boxing_train --out map.json --play-out BUNDLE   # for genie-env play
"""

REAL_EVAL_EXAMPLES = """\
examples:
  genie-env real-eval --policy random --env FetchReach-v4 --episodes 100 --seed 0 --json reach_random.json
  genie-env real-eval --policy runs/boxing/policy.zip --env ALE/Boxing-v5 --episodes 100 --seed 0 \\
      --latent-mapping map.json --json boxing.json
"""


REAL_TRAIN_EXAMPLES = """\
examples (the baselines of an imagination run, same algorithm and arguments):
  genie-env real-train FetchReach-v4 --algo SAC --steps 12000 --num-envs 16 --out runs/reach_real_steps
  genie-env real-train FetchReach-v4 --algo SAC --seconds-of runs/reach_sac --num-envs 16 --out runs/reach_real_time
"""

COMPARE_EXAMPLES = """\
examples:
  genie-env compare --entry random=reach_random.json --entry world=reach_world.json@runs/reach_sac \\
      --entry real-steps=reach_steps.json@runs/reach_real_steps --png compare.png --md compare.md
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _cmd_latent_mapping(args: argparse.Namespace) -> int:
    import torch

    from agents.latent_mapping import fit_latent_mapping
    from genie_env.models.genie.world import GenieWorldModel

    torch.manual_seed(0)
    world = GenieWorldModel.from_pretrained(args.bundle, device=args.device).eval()
    mapping = fit_latent_mapping(world, args.data, args.episodes, args.max_transitions)
    mapping.save(args.out)
    print(f"{mapping.num_transitions} transitions, {mapping.num_latent} latent x {mapping.num_real} real actions")
    names = mapping.real_action_names or [str(a) for a in range(mapping.num_real)]
    for z, a in enumerate(mapping.latent_to_real):
        print(f"  latent {z} -> {names[a]}")
    print(f"-> {args.out}")
    if args.play_out is not None:
        print(f"-> {mapping.save_play_mapping(args.play_out)}")
    return 0


def _cmd_real_eval(args: argparse.Namespace) -> int:
    from agents.real_eval import real_eval

    result = real_eval(
        args.policy,
        args.env,
        args.episodes,
        args.seed,
        latent_mapping=args.latent_mapping,
        max_steps=args.max_steps,
    )
    atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    low, high = result["ci95_low"], result["ci95_high"]
    ci = f"[{low:.2f}, {high:.2f}]" if low is not None else "n/a (1 episode)"
    line = f"{args.env} {result['policy']}: mean return {result['mean_return']:.2f}, 95% CI {ci}"
    if result["success_rate"] is not None:
        lo, hi = result["success_ci95"]
        line += f", success {result['success_rate']:.1%} [{lo:.1%}, {hi:.1%}]"
    print(line)
    print(f"-> {args.json}")
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _algo_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """PPO's ``--n-steps`` and the ``--algo-kwargs`` JSON object."""
    kwargs: dict[str, Any] = {"n_steps": args.n_steps} if args.algo == "PPO" else {}
    if args.algo_kwargs:
        try:
            extra = json.loads(args.algo_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--algo-kwargs must be a JSON object, got {args.algo_kwargs!r}: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError(f"--algo-kwargs must be a JSON object, got {args.algo_kwargs!r}")
        kwargs.update(extra)
    return kwargs


def _print_run(result: Any, where: str) -> None:
    mean = sum(r[1] for r in result.returns[-10:]) / max(len(result.returns[-10:]), 1)
    print(
        f"{result.timesteps} steps {where} in {result.seconds / 60:.1f} min, {len(result.returns)} episodes, "
        f"last-10 mean return {mean:.3f}"
    )
    print(f"-> {result.policy}" + (f", {result.curve}" if result.curve else ""))


def _cmd_imagine(args: argparse.Namespace) -> int:
    from agents.imagination import train_in_imagination

    env_kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    if args.maskgit_steps is not None:
        env_kwargs["maskgit_steps"] = args.maskgit_steps
    if args.denoise_steps is not None:
        env_kwargs["denoise_steps"] = args.denoise_steps
    if args.precision is not None:
        env_kwargs["precision"] = args.precision
    if args.reward_type is not None:
        env_kwargs["reward_type"] = args.reward_type
    result = train_in_imagination(
        args.env_id,
        args.out,
        algo=args.algo,
        total_steps=args.steps,
        num_envs=args.num_envs,
        seed=args.seed,
        algo_kwargs=_algo_kwargs(args),
        env_kwargs=env_kwargs,
        observation_keys=args.obs_keys.split(",") if args.obs_keys else None,
        progress=not args.no_progress,
    )
    _print_run(result, "in imagination")
    return 0


def _cmd_real_train(args: argparse.Namespace) -> int:
    from agents.reality import train_in_reality

    seconds = args.seconds
    if args.seconds_of:
        run_json = Path(args.seconds_of) / "run.json"
        if not run_json.is_file():
            raise FileNotFoundError(f"no run.json in {args.seconds_of} (a genie-env imagine run directory)")
        seconds = float(json.loads(run_json.read_text())["seconds"])
    if args.steps is None and seconds is None:
        raise ValueError("give the budget: --steps N, --seconds S or --seconds-of RUN")
    result = train_in_reality(
        args.env_id,
        args.out,
        algo=args.algo,
        total_steps=args.steps,
        max_seconds=seconds,
        num_envs=args.num_envs,
        seed=args.seed,
        algo_kwargs=_algo_kwargs(args),
        reward_type=args.reward_type or "sparse",
        observation_keys=args.obs_keys.split(",") if args.obs_keys else None,
        progress=not args.no_progress,
    )
    _print_run(result, "in the real simulator")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from agents.compare import Entry, comparison_plot, table

    entries = []
    for spec in args.entry:
        label, sep, rest = spec.partition("=")
        if not sep or not label or not rest:
            raise ValueError(f"--entry must be LABEL=EVAL.json[@RUN_DIR], got {spec!r}")
        eval_json, _, run = rest.partition("@")
        entries.append(Entry.load(label, eval_json, run or None))
    text = table(entries)
    print(text, end="")
    if args.md:
        atomic_write_text(Path(args.md), text)
    print(f"-> {comparison_plot(entries, args.png, title=args.title)}")
    return 0


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``imagine`` and ``real-train``, so that a baseline repeats its imagination command."""
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--algo", choices=["PPO", "SAC"], default="PPO", help="algorithm (default PPO)")
    p.add_argument("--num-envs", type=_positive, default=8, help="envs stepped as one batch (default 8)")
    p.add_argument("--n-steps", type=_positive, default=64, help="PPO rollout length per env (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--algo-kwargs",
        default=None,
        metavar="JSON",
        help='more arguments of the algorithm, e.g. \'{"gradient_steps": 4, "gamma": 0.95}\'',
    )
    p.add_argument(
        "--reward-type", choices=["sparse", "dense"], default=None, help="Fetch goal reward (default sparse)"
    )
    p.add_argument(
        "--obs-keys", default=None, metavar="K1,K2", help="observe only these Dict entries, e.g. state,goal"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``imagine``, ``real-train``, ``compare``, ``latent-mapping`` and ``real-eval`` subcommands."""
    from genie_env.precision import PRECISIONS

    p = subparsers.add_parser(
        "imagine",
        help="train a stable-baselines3 agent inside a world-model env",
        description="Train PPO (or SAC) only inside a registered world env through the batched SB3 VecEnv; "
        "writes OUT/policy.zip, checkpoints, TensorBoard logs, returns.csv, run.json and learning_curve.png.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="world env id, e.g. genie_env/Genie-Boxing-v0")
    _add_training_arguments(p)
    p.add_argument("--steps", type=_positive, default=10_000, help="env steps over all envs (default 10000)")
    p.add_argument("--checkpoint", default=None, help="bundle for Genie-v0 / GESim-v0")
    p.add_argument("--maskgit-steps", type=_positive, default=None, help="Genie MaskGIT steps")
    p.add_argument("--denoise-steps", type=_positive, default=None, help="GE-Sim sampler steps")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="world-model arithmetic (default float32; bfloat16 is faster on CPUs with AMX and on GPUs)",
    )
    p.set_defaults(func=_cmd_imagine)

    p = subparsers.add_parser(
        "real-train",
        help="train the same agent in the real simulator (the equal-steps / equal-time baseline)",
        description="Train PPO (or SAC) in the real simulator with the world envs' observations, for --steps env "
        "steps and/or a wall-clock budget; writes the same run directory as genie-env imagine.",
        epilog=REAL_TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("env_id", metavar="ENV_ID", help="real env id, e.g. FetchReach-v4, ALE/Boxing-v5")
    _add_training_arguments(p)
    p.add_argument("--steps", type=_positive, default=None, help="env steps over all envs")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=_positive_float, default=None, help="wall-clock budget in seconds")
    budget.add_argument("--seconds-of", default=None, metavar="RUN", help="the wall-clock of this run's run.json")
    p.set_defaults(func=_cmd_real_train)

    p = subparsers.add_parser(
        "compare",
        help="compare real-eval results (and their training runs) in a table and a PNG",
        description="Table and figure of real-simulator outcomes with 95%% intervals, and the training curves of "
        "the runs against env steps and wall-clock.",
        epilog=COMPARE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--entry", action="append", required=True, metavar="LABEL=EVAL.json[@RUN]", help="one compared policy"
    )
    p.add_argument("--png", required=True, metavar="OUT.png", help="where to write the figure")
    p.add_argument("--md", default=None, metavar="OUT.md", help="also write the Markdown table")
    p.add_argument("--title", default="", help="figure title")
    p.set_defaults(func=_cmd_compare)

    p = subparsers.add_parser(
        "latent-mapping",
        help="map a Genie world's latent actions to real actions from a labelled recording",
        description="Label each transition of a recording with the bundle's latent action model, count latent x "
        "real actions and write the mapping (counts, latent_to_real, real_to_latent) as JSON.",
        epilog=LATENT_MAPPING_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", metavar="BUNDLE", help="Genie bundle directory")
    p.add_argument("--data", required=True, metavar="DATASET", help="LeRobot recording with screen and actions")
    p.add_argument("--episodes", type=_positive, default=None, metavar="N", help="first N episodes (default all)")
    p.add_argument("--max-transitions", type=_positive, default=None, metavar="N", help="stop after N transitions")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where to write the mapping")
    p.add_argument(
        "--play-out",
        default=None,
        metavar="PATH",
        help="also write the {REAL_ACTION: latent} file genie-env play reads (a directory gets latent_mapping.json)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_cmd_latent_mapping)

    p = subparsers.add_parser(
        "real-eval",
        help="evaluate a policy in the real simulator (mean return, success rate, 95%% intervals)",
        description="Run a policy in the real simulator with the world envs' observation format; episode i is "
        "reset with seed + i. Writes the result as JSON.",
        epilog=REAL_EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", required=True, metavar="PATH.zip|random", help="SB3 model zip or 'random'")
    p.add_argument("--env", required=True, metavar="ENV_ID", help="real env id, e.g. FetchReach-v4, ALE/Boxing-v5")
    p.add_argument("--episodes", type=_positive, default=100, metavar="N", help="episodes (default 100)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="episode i is reset with S + i (default 0)")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the result (JSON)")
    p.add_argument("--latent-mapping", default=None, metavar="FILE", help="latent mapping JSON for Genie policies")
    p.add_argument("--max-steps", type=_positive, default=None, metavar="N", help="cap on the episode length")
    p.set_defaults(func=_cmd_real_eval)
