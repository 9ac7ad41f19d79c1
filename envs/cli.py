"""``genie-env bench``: registered into the core CLI through the ``genie_env.commands`` entry-point group."""

from __future__ import annotations

import argparse
import textwrap

DESCRIPTION = (
    "Measure the world-model environments against the real simulators they imitate, in one process. The real "
    "simulators run as our datasets record them (ALE/Boxing-v5 at 64x64; FetchPush-v4 physics plus front, side and "
    "hand views at 64x64), one env, random actions. Each world model runs through its batched core at each batch "
    "size in --envs, doing per step what the VectorEnv and SB3 adapters do (random valid actions, the model step, "
    "uint8 NumPy observations, restarts). Reports env steps/s, per-step latency p50/p95, memory (RSS delta on CPU, "
    "peak allocated on CUDA) and each world's steps/s divided by its real simulator's (Genie vs Boxing, GE-Sim vs "
    "Fetch). A world whose checkpoint cannot be found is skipped with the reason. Each configuration warms up, then "
    "runs about --seconds (at most 3x that), so a run takes bounded time. Writes the JSON and prints a markdown "
    "table."
)

EXAMPLES = """\
examples:
  genie-env bench --json bench.json
  genie-env bench --json bench.json --envs 1,8 --seconds 3
  genie-env bench --json bench.json --gesim runs/gesim/bundle --device cuda
"""


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,16,64, got {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1, got {text!r}")
    return sizes


def _cmd_bench(args: argparse.Namespace) -> int:
    from envs.bench import format_table, run_bench

    result = run_bench(
        args.json,
        envs=args.envs,
        seconds=args.seconds,
        genie=args.genie,
        gesim=args.gesim,
        device=args.device,
        maskgit_steps=args.maskgit_steps,
        denoise_steps=args.denoise_steps,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_table(result))
    print(f"-> {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``bench`` subcommand (entry point ``genie_env.commands: envs``)."""
    from envs.bench import DEFAULT_ENVS, DEFAULT_SECONDS, WORLDS

    p = subparsers.add_parser(
        "bench",
        help="benchmark the world-model envs (steps/s, latency, memory) against the real simulators",
        description=textwrap.fill(DESCRIPTION, 100),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the result (JSON)")
    p.add_argument(
        "--envs",
        type=_batch_sizes,
        default=list(DEFAULT_ENVS),
        metavar="N,N,...",
        help=f"batch sizes of the world models (default {','.join(map(str, DEFAULT_ENVS))})",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"seconds per configuration (default {DEFAULT_SECONDS:g})",
    )
    p.add_argument(
        "--genie",
        default=WORLDS["genie"].default_checkpoint,
        metavar="CKPT",
        help=f"Genie bundle directory or shipped name (default {WORLDS['genie'].default_checkpoint})",
    )
    p.add_argument(
        "--gesim",
        default=WORLDS["gesim"].default_checkpoint,
        metavar="CKPT",
        help=f"GE-Sim bundle directory or shipped name (default {WORLDS['gesim'].default_checkpoint}; "
        "skipped with the reason if absent)",
    )
    p.add_argument(
        "--maskgit-steps", type=int, default=None, help="Genie MaskGIT steps per frame (default: the bundle's)"
    )
    p.add_argument(
        "--denoise-steps", type=int, default=None, help="GE-Sim sampler steps per frame (default: the bundle's)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the world models, e.g. cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random actions and start states (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
