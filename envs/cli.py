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
  genie-env bench --json bench.json --precision float32,bfloat16   # bfloat16 pays on CPUs with AMX
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


def _precisions(text: str) -> list[str]:
    from genie_env.precision import PRECISIONS

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(name not in PRECISIONS for name in names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(PRECISIONS)}, got {text!r}")
    return names


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
        precisions=args.precision,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_table(result))
    print(f"-> {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``bench`` and ``play`` subcommands (entry point ``genie_env.commands: envs``)."""
    from envs.bench import DEFAULT_ENVS, DEFAULT_SECONDS, WORLDS

    _register_play(subparsers)

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
    p.add_argument(
        "--precision",
        type=_precisions,
        default=["float32"],
        metavar="P,P",
        help="world-model arithmetic, float32 and/or bfloat16, each measured (default float32)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random actions and start states (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)


PLAY_DESCRIPTION = (
    "Play a world env with the keyboard in a pygame window: every camera view side by side above a HUD (env id, "
    "step, fps and model latency, reward and return, the last action, memory window, sampler steps). Genie: keys "
    "1..n choose latent actions (sticky until another is chosen); arrows and space choose the latent actions a "
    "bundle's latent_mapping.json maps them to, when one is shipped. GE-Sim: W/S, A/D, Q/E move the end effector "
    "along x, y, z while held; Space toggles the gripper; T toggles the trajectory-map overlay. All: P pause, N one "
    "step while paused, R reset with a new seed, [ ] fewer/more sampler steps, TAB hand control to --policy and "
    "back, ESC quits. Without a display (SDL_VIDEODRIVER=dummy, or --headless) the same loop runs --steps "
    "iterations with --keys, the --policy, or random actions, and records. --record writes an mp4 of what the "
    "window shows; --record-dataset writes the played episodes as a dataset in our LeRobot layout."
)

PLAY_EXAMPLES = """\
examples:
  genie-env play genie_env/Genie-Boxing-v0 --record boxing.mp4
  genie-env play genie_env/GESim-v0 --checkpoint runs/gesim/bundle --denoise-steps 4 --record-dataset data/played
  SDL_VIDEODRIVER=dummy genie-env play Genie-Boxing-v0 --steps 40 --keys 0:3,10:5,20:p,25:n --record out.mp4
"""


def _cmd_play(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from envs.play import full_env_id, parse_scripted_keys, play

    env_id = full_env_id(args.env_id)
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("genie_env/"))
        raise ValueError(f"unknown env id {args.env_id!r}; world envs: {', '.join(known)}")
    entry = str(gym.spec(env_id).entry_point)
    kwargs: dict = {}
    if args.checkpoint is not None:
        kwargs["checkpoint"] = args.checkpoint
    for flag, key, module in (
        ("maskgit_steps", "maskgit_steps", "genie_world"),
        ("denoise_steps", "denoise_steps", "gesim_world"),
    ):
        value = getattr(args, flag)
        if value is not None:
            if module not in entry:
                raise ValueError(f"--{flag.replace('_', '-')} does not apply to {env_id} ({entry})")
            kwargs[key] = value
    if args.device is not None:
        kwargs["device"] = args.device
    if args.precision is not None:
        kwargs["precision"] = args.precision
    result = play(
        env_id,
        seed=args.seed,
        fps=args.fps,
        record=args.record,
        record_dataset=args.record_dataset,
        policy=args.policy,
        steps=args.steps,
        size=args.size,
        scripted_keys=parse_scripted_keys(args.keys) if args.keys else None,
        headless=True if args.headless else None,
        env_kwargs=kwargs,
        real=args.real,
    )
    returns = ", ".join(f"{r:+.3f}" for r in result.returns)
    print(f"{env_id}: {result.steps} steps, {result.episodes} episodes, {result.frames} frames; returns {returns}")
    for path in (result.video, result.dataset):
        if path is not None:
            print(f"-> {path}")
    return 0


def _register_play(subparsers: argparse._SubParsersAction) -> None:
    from genie_env.precision import PRECISIONS

    p = subparsers.add_parser(
        "play",
        help="play a world env with the keyboard (pygame window, HUD, mp4 / dataset recording)",
        description=textwrap.fill(PLAY_DESCRIPTION, 100),
        epilog=PLAY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("env_id", metavar="ENV_ID", help="a world env id, e.g. genie_env/Genie-Boxing-v0 (prefix optional)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset; R uses seed+1, ... (default 0)")
    p.add_argument("--fps", type=float, default=None, help="window pace and mp4 rate (default: the env's render_fps)")
    p.add_argument("--record", metavar="FILE.mp4", default=None, help="write an mp4 of what the window shows")
    p.add_argument(
        "--record-dataset", metavar="DIR", default=None, help="write the played episodes as a LeRobot-layout dataset"
    )
    p.add_argument("--policy", metavar="PATH.zip", default=None, help="a stable-baselines3 model (TAB: its turn)")
    p.add_argument(
        "--steps", type=int, default=None, help="loop iterations, then stop (default: until ESC; required head-less)"
    )
    p.add_argument("--size", type=int, default=4, help="integer upscale of the views (default 4)")
    p.add_argument("--checkpoint", metavar="DIR", default=None, help="bundle directory (for Genie-v0 / GESim-v0)")
    p.add_argument("--maskgit-steps", type=int, default=None, help="Genie MaskGIT steps per frame (default: bundle)")
    p.add_argument("--denoise-steps", type=int, default=None, help="GE-Sim sampler steps per frame (default: bundle)")
    p.add_argument("--device", default=None, help="torch device of the world model (default cpu)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="world-model arithmetic (default float32; bfloat16 is faster on CPUs with AMX and on GPUs)",
    )
    p.add_argument("--headless", action="store_true", help="no window even where a display exists")
    p.add_argument(
        "--real",
        action="store_true",
        help="the real simulator beside the world, same start and actions (Genie: through the latent mapping)",
    )
    p.add_argument(
        "--keys", metavar="I:KEY,...", default=None, help="scripted key presses by loop iteration, e.g. 0:w,3:p,4:n"
    )
    p.set_defaults(func=_cmd_play)
