"""The ``genie-env`` command line.

Core subcommands live here; packages that build on the core (training, envs, agents) add theirs through the
``genie_env.commands`` entry-point group: each entry point names a function ``register(subparsers)`` that
adds one or more subparsers with ``set_defaults(func=...)``. The core never imports them directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from genie_env import __version__
from genie_env.data.errors import DatasetError


def _cmd_collect(args: argparse.Namespace) -> int:
    from genie_env.data.collect import collect

    stats = collect(
        args.env_id,
        args.episodes,
        args.out,
        seed=args.seed,
        size=args.size,
        policy=args.policy,
        max_steps=args.max_steps,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(
        f"recorded {stats.episodes} episodes, {stats.frames} frames in {stats.seconds:.1f} s "
        f"({stats.steps_per_second:.1f} steps/s, {stats.successes} successes) -> {args.out}"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from genie_env.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(args.dataset)
    print(ds)
    recipe = ds.info.get("genie_env", {}).get("recipe")
    if recipe:
        print(f"recipe: {recipe}")
    for name, feature in ds.features.items():
        extra = ""
        if feature.is_video and ds.intrinsics(name.removeprefix("observation.images.")) is not None:
            k = ds.intrinsics(name.removeprefix("observation.images."))
            extra = f"  fx={k[0, 0]:.2f} fy={k[1, 1]:.2f} cx={k[0, 2]:.2f} cy={k[1, 2]:.2f}"
        print(f"  {name:<42} {feature.dtype:<8} {list(feature.shape)}{extra}")
    if ds.episodes and "success" in ds.episodes[0]:
        rate = sum(bool(e["success"]) for e in ds.episodes) / ds.num_episodes
        print(f"success rate: {rate:.0%}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from genie_env.demo import main_demo

    return main_demo(args.out, args.size, args.steps, args.seed)


def _cmd_eval(args: argparse.Namespace) -> int:
    from genie_env.eval import evaluate, format_table

    given = {
        "steps": args.steps,
        "temperature": args.temperature,
        "prompt_frames": args.prompt_frames,
        "horizon": args.horizon,
        "windows_per_episode": args.windows_per_episode,
    }
    options = {k: v for k, v in given.items() if v is not None}  # unset: the evaluator's (or bundle's) default
    result = evaluate(
        args.checkpoint,
        args.data,
        args.episodes,
        json_path=args.json,
        png=args.png,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        **options,
    )
    print(format_table(result))
    print(f"-> {args.json}" + (f", {args.png}" if args.png else ""))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from genie_env.generate import main_generate

    return main_generate(
        args.checkpoint,
        args.episode,
        args.out,
        steps=args.steps,
        seed=args.seed,
        max_frames=args.max_frames,
        prompt_frames=args.prompt_frames,
        device=args.device,
        progress=not args.no_progress,
    )


def _cmd_bundle(args: argparse.Namespace) -> int:
    if args.kind == "genie":
        from genie_env.models.genie import assemble_genie_bundle

        missing = [f"--{k}" for k in ("tokenizer", "lam", "dynamics") if getattr(args, k) is None]
        if missing:
            raise ValueError(f"a genie bundle needs {', '.join(missing)}")
        sampling = {"maskgit_steps": args.steps, "temperature": args.temperature}
        out = assemble_genie_bundle(
            args.tokenizer,
            args.lam,
            args.dynamics,
            args.out,
            sampling={k: v for k, v in sampling.items() if v is not None},
        )
    else:
        from genie_env.models.gesim.world import assemble_gesim_bundle

        if args.dit is None:
            raise ValueError("a gesim bundle needs --dit")
        out = assemble_gesim_bundle(args.vae, args.dit, args.out, **({"steps": args.steps} if args.steps else {}))
    if args.starts:
        from genie_env.start_states import START_STATES_FILE, build_start_states

        if args.start_episodes is not None and args.start_episodes < 1:
            raise ValueError(f"--start-episodes must be >= 1, got {args.start_episodes}")

        bank = build_start_states(
            args.starts,
            prompt_frames=args.start_frames,
            episodes=None if args.start_episodes is None else list(range(args.start_episodes)),
            offsets=args.start_offsets,
        )
        bank.save(out / START_STATES_FILE)
        print(f"start states: {len(bank)} from {args.starts}")
    if args.heads:
        from genie_env.models.heads import add_bundle_heads

        print(f"heads -> {add_bundle_heads(out, args.heads)}")
    print(f"{args.kind} world model -> {out}")
    return 0


def _cmd_calibrate_vae(args: argparse.Namespace) -> int:
    from genie_env.models.gesim.world import calibrate_vae

    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    print(f"calibrated VAE -> {calibrate_vae(args.vae, args.data, args.out, max_frames=args.frames)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full parser, including subcommands registered by installed packages."""
    parser = argparse.ArgumentParser(
        prog="genie-env",
        description="Learned simulators (GE-Sim, Genie) as Gymnasium environments: record real simulators, "
        "train world models on the recordings, and use them as environments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'genie-env COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"genie-env {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "collect",
        help="record a real simulator (Fetch, Atari) into a LeRobot-layout dataset",
        description="Record ENV_ID into a LeRobot v2.1 dataset. Fetch tasks are recorded from three cameras "
        "(front, side, hand) with per-frame camera-to-base extrinsics and intrinsics (OpenCV convention); "
        "Atari screens are resized to SIZE x SIZE. Each episode is written atomically, so an interrupted run "
        "leaves a readable dataset; --resume continues it with identical episodes.",
    )
    p.add_argument(
        "env_id", metavar="ENV_ID", help="FetchReach-v4, FetchPush-v4, FetchPickAndPlace-v4, or ALE/<Game>-v5"
    )
    p.add_argument("--episodes", type=int, required=True, help="number of episodes the dataset should hold")
    p.add_argument("--out", required=True, help="dataset directory (must be new or empty, see --overwrite/--resume)")
    p.add_argument("--seed", type=int, default=0, help="collection seed; episode i depends only on (seed, i)")
    p.add_argument("--size", type=int, default=64, help="square image size in pixels (default 64)")
    p.add_argument(
        "--policy",
        choices=("scripted", "random", "mixed"),
        default="mixed",
        help="Fetch: task controller with noise / held random actions / per-episode mix (default). "
        "Atari: action-holding random / uniform random / mix",
    )
    p.add_argument("--max-steps", type=int, default=None, help="cap on actions per episode (default: env limit)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    group.add_argument("--resume", action="store_true", help="add the missing episodes to the dataset at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser(
        "info",
        help="summarise a dataset",
        description="Print a dataset's size, the recipe it was collected with, every feature (dtype and shape), "
        "each camera's intrinsics, and the success rate of its episodes where the task has one.",
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset directory")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo",
        help="record the real simulators, let the shipped world models imagine them, write videos and PNG strips",
        description="Record FetchPush-v4 (three cameras) and ALE/Boxing-v5, write a preview mp4 and a PNG strip of "
        "each under --out and print the recording speed; then every shipped world model that fits a recording "
        "imagines it from its first frames (real over imagined mp4 and strip; PSNR against copy-last printed).",
    )
    p.add_argument("--out", default="genie-env-demo", help="output directory (default ./genie-env-demo)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--steps", type=int, default=150, help="Boxing steps to record (default 150)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "eval",
        help="evaluate a world-model bundle on held-out episodes",
        description="Evaluate the world-model bundle CHECKPOINT_DIR (a directory with world_model.json, e.g. "
        "from assemble_genie_bundle) on the first N episodes of a held-out dataset, dispatching on the bundle's "
        "type. Genie: tokenizer PSNR/SSIM and codebook usage, latent-action usage and NMI with the recorded "
        "actions, rollout PSNR/SSIM at horizons 1/4/8/16 from real prompt frames, the copy-last-frame baseline, "
        "random-action rollouts and delta-PSNR@4 (controllability). Prints a table and writes the JSON "
        "atomically.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="world-model bundle directory (world_model.json)")
    p.add_argument("--data", required=True, metavar="DATASET", help="held-out LeRobot dataset directory")
    p.add_argument("--episodes", type=int, required=True, metavar="N", help="use the first N episodes")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the result (JSON)")
    p.add_argument("--png", default=None, metavar="OUT.png", help="also write a real/generated/random-action grid")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="MaskGIT steps (Genie) or flow steps (GE-Sim) per frame (default: the bundle's)",
    )
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and random actions (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--prompt-frames", type=int, default=None, help="real prompt frames per rollout (default 4)")
    p.add_argument("--horizon", type=int, default=None, help="generated frames per rollout (default 16)")
    p.add_argument("--windows-per-episode", type=int, default=None, help="evaluation windows per episode (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "generate",
        help="re-imagine a recorded episode with a GE-Sim world model (mp4: generated / real / trajectory maps)",
        description="From the episode's first frames and its recorded tip poses and cameras, generate the rest of "
        "the episode with the GE-Sim world model CHECKPOINT_DIR (a bundle, or a gesim run), chunk by chunk with "
        "re-chosen sparse memory, and write an mp4: generated views side by side, the real ones below, then the "
        "trajectory maps. Prints the PSNR of the generated frames against the real ones.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="GE-Sim bundle directory, or a gesim run directory")
    p.add_argument("--episode", required=True, metavar="DATASET:INDEX", help="recorded episode, e.g. data/push:0")
    p.add_argument("--out", required=True, metavar="VIDEO.mp4", help="the mp4 to write")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per chunk (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the episode's first N frames")
    p.add_argument("--prompt-frames", type=int, default=None, help="real frames given (default: the memory size)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "bundle",
        help="assemble a world-model bundle from training runs",
        description="Assemble the trained networks of a world model into one bundle directory (world_model.json "
        "plus one folder per network, written atomically), the form that eval, generate and the environments load. "
        "Each run may be a run directory (its latest checkpoint) or a checkpoint directory; EMA weights are taken "
        "where a checkpoint has them.",
    )
    p.add_argument("kind", choices=["genie", "gesim"], help="world model type")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument("--tokenizer", metavar="RUN", help="genie: tokenizer run")
    p.add_argument("--lam", metavar="RUN", help="genie: latent action model run")
    p.add_argument("--dynamics", metavar="RUN", help="genie: dynamics run")
    p.add_argument("--vae", metavar="RUN", help="gesim: VAE run (default: the one the DiT was trained with)")
    p.add_argument("--dit", metavar="RUN", help="gesim: DiT run")
    p.add_argument("--steps", type=int, help="default sampler steps stored in the bundle")
    p.add_argument("--temperature", type=float, help="genie: default MaskGIT temperature stored in the bundle")
    p.add_argument("--heads", metavar="RUN", help="reward/termination/object heads run (genie-env train heads)")
    p.add_argument("--starts", metavar="DATASET", help="recording to cut the env's start-state bank from")
    p.add_argument("--start-frames", type=int, default=1, metavar="P", help="real frames per start (default 1)")
    p.add_argument("--start-episodes", type=int, default=None, metavar="N", help="first N episodes (default all)")
    p.add_argument(
        "--start-offsets",
        choices=["start", "random"],
        default="start",
        help="each start at the episode's beginning (default; Fetch goals belong there) or at a random time",
    )
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser(
        "calibrate-vae",
        help="store per-channel latent statistics in a trained GE-Sim VAE (unit-scale latents for the DiT)",
        description="Encode about --frames frames of DATASET with the trained VAE (EMA weights where present), "
        "measure the per-channel mean and standard deviation of its latents and write a copy of the VAE with them "
        "as latents_mean / latents_std to OUT; train the gesim DiT with component.vae=OUT.",
    )
    p.add_argument("vae", metavar="VAE_RUN", help="gesim-vae run or checkpoint directory")
    p.add_argument("--data", required=True, metavar="DATASET", help="the recording the VAE was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--frames", type=int, default=2048, help="about how many frames to encode (default 2048)")
    p.set_defaults(func=_cmd_calibrate_vae)

    for ep in entry_points(group="genie_env.commands"):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genie-env`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, DatasetError) as exc:
        print(f"genie-env {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genie-env {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
