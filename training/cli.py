"""``genie-env train``: registered into the core CLI through the ``genie_env.commands`` entry-point group."""

from __future__ import annotations

import argparse
import textwrap

from training.components import COMPONENTS, get_component
from training.config import load_run_config, run_config_keys

DESCRIPTION = (
    "Train COMPONENT on a recorded dataset with accelerate (one CPU/GPU, or several processes under "
    "'accelerate launch'). Writes RUN_DIR/config.yaml, TensorBoard logs under RUN_DIR/logs and atomic checkpoints "
    "under RUN_DIR/checkpoints; --resume continues the latest checkpoint exactly; Ctrl-C saves a checkpoint "
    "before exiting."
)

EXAMPLES = """\
examples:
  genie-env train gesim-vae --data data/fetch_push --out runs/vae
  genie-env train gesim-vae --data data/fetch_push --out runs/vae --config vae.yaml --set train.lr=3e-4
  genie-env train gesim-vae --data data/fetch_push --out runs/vae --resume --steps 20000
  genie-env train genie --data data/boxing --out runs/genie --steps 2000 --set train.compile=true
  accelerate launch --multi_gpu --num_processes 2 -m genie_env train gesim-vae --data data/fetch_push --out runs/vae
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m genie_env train ...   (2 CPU processes)

config keys (YAML sections train / data / component, or --set section.key=value):
  {keys}
"""


def _describe(name: str) -> str:
    cls = COMPONENTS[name]
    fields = ", ".join(
        k.removeprefix("component.") for k in run_config_keys(cls.config_class) if k.startswith("component.")
    )
    return f"  {name:<16} {cls.description}\n  {'':<16} component.{{{fields}}}"


def _cmd_train(args: argparse.Namespace) -> int:
    from training.engine import train_component  # heavy imports (accelerate, diffusers) only when training

    if args.component == "genie":
        from training.pipeline import train_genie

        overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
        train_genie(
            args.data,
            args.out,
            overrides=overrides,
            config_path=args.config,
            resume=args.resume,
            progress=not args.no_progress,
        )
        return 0
    component_cls = get_component(args.component)
    overrides = list(args.set)
    overrides += [f"data.path={args.data}", f"train.out_dir={args.out}"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    config = load_run_config(component_cls.config_class, args.config, overrides)
    train_component(args.component, config, resume=args.resume, progress=not args.no_progress)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` subcommand (entry point ``genie_env.commands: train``)."""
    components = "\n".join(_describe(name) for name in COMPONENTS) + (
        f"\n  {'genie':<16} the Genie pipeline: tokenizer, lam, dynamics in RUN_DIR/<stage>, then RUN_DIR/bundle"
    )
    first = next(iter(COMPONENTS.values()))
    keys = [k for k in run_config_keys(first.config_class) if not k.startswith("component.")]
    keys_text = textwrap.fill(", ".join([*keys, "component.<field> (listed per component above)"]), 100)
    p = subparsers.add_parser(
        "train",
        help="train a world-model component (accelerate; checkpoints, TensorBoard, exact resume)",
        description=textwrap.fill(DESCRIPTION, 100) + f"\n\ncomponents:\n{components}",
        epilog=EXAMPLES.format(keys=textwrap.indent(keys_text, "  ").lstrip()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "component", metavar="COMPONENT", choices=[*sorted(COMPONENTS), "genie"], help="one of the components above"
    )
    p.add_argument("--data", required=True, metavar="DIR", help="LeRobot dataset directory (genie-env collect)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, logs, config)")
    p.add_argument("--config", metavar="YAML", help="YAML file with train / data / component sections")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.lr=3e-4 --set component.kl_weight=1e-5 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="total training steps (same as --set train.steps=N)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="print a line per log step instead of a progress bar")
    p.set_defaults(func=_cmd_train)
