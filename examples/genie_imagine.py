"""Imagine Atari Boxing with the shipped Genie: real prompt frames in, generated frames out.

Records a short Boxing episode, reads the latent actions the LAM infers from it, and lets the world model generate
the rest of the episode from its first frames, once with those actions and once with one latent action held down.
Writes a PNG (real / generated with inferred actions / generated with a held action) and prints the PSNR per step.

    python examples/genie_imagine.py --out genie-imagine
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie_env.assets import asset_path
from genie_env.data.collect import collect
from genie_env.data.lerobot import LeRobotDataset
from genie_env.eval.metrics import psnr, to_uint8
from genie_env.models.genie import GenieWorldModel
from genie_env.viz import save_png, strip, upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("genie-imagine"), help="output folder")
    parser.add_argument("--prompt", type=int, default=4, help="real prompt frames")
    parser.add_argument("--horizon", type=int, default=8, help="frames to imagine")
    parser.add_argument("--seed", type=int, default=0, help="recording and sampling seed")
    args = parser.parse_args()

    world = GenieWorldModel.from_pretrained(asset_path("genie-boxing-tiny"))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "boxing"
        length = args.prompt + args.horizon
        collect("ALE/Boxing-v5", 1, data, seed=args.seed, max_steps=length, progress=False)
        screen = LeRobotDataset(data).load_episode(0)["observation.images.screen"][:length]
    real = rearrange(torch.from_numpy(screen), "t h w c -> 1 t c h w").float() / 127.5 - 1.0

    # Entry t of the inferred actions explains frame t -> t + 1; the first imagined frame is frame `prompt`.
    inferred = world.infer_actions(real)[:, args.prompt - 1 :]
    held = torch.full_like(inferred, int(inferred[0, 0]))
    prompt = real[:, : args.prompt]
    imagined = world.rollout(prompt, inferred, generator=torch.Generator().manual_seed(args.seed))
    held_out = world.rollout(prompt, held, generator=torch.Generator().manual_seed(args.seed))

    target = real[:, args.prompt :]
    scores = psnr(to_uint8(imagined[0]), to_uint8(target[0]))
    print(f"latent actions inferred from the real clip: {inferred[0].tolist()}")
    print("PSNR per imagined step (dB): " + " ".join(f"{s:.1f}" for s in scores.tolist()))
    rows = [strip(to_uint8(x[0]).permute(0, 2, 3, 1).numpy(), n=args.horizon) for x in (target, imagined, held_out)]
    path = save_png(args.out / "imagined.png", upscale(np.concatenate(rows, axis=0), 3))
    print(f"wrote {path} (rows: real, imagined with the inferred actions, imagined with action {int(held[0, 0])})")


if __name__ == "__main__":
    main()
