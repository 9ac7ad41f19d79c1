"""The shipped world models load, fit together and generate deterministic, causal rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from einops import rearrange

from genie_env.assets import asset_path, available_assets
from genie_env.data.lerobot import LeRobotDataset
from genie_env.models.genie import GenieWorldModel


def test_genie_boxing_is_shipped_with_a_model_card() -> None:
    assert "genie-boxing-tiny" in available_assets()
    root = asset_path("genie-boxing-tiny")
    card = (root / "README.md").read_text()
    for needed in ("genie-env collect ALE/Boxing-v5", "genie-env train", "genie-env eval", "tokenizer_psnr"):
        assert needed in card, needed
    assert json.loads((root / "world_model.json").read_text())["type"] == "genie"
    with pytest.raises(FileNotFoundError, match="genie-boxing-tiny"):
        asset_path("no-such-model")


def test_genie_boxing_rolls_out_real_frames(atari_dataset: Path) -> None:
    world = GenieWorldModel.from_pretrained(asset_path("genie-boxing-tiny"))
    assert world.frame_shape == (3, 64, 64) and world.num_actions == 8
    screen = LeRobotDataset(atari_dataset).load_episode(0)["observation.images.screen"][:8]
    real = rearrange(torch.from_numpy(screen), "t h w c -> 1 t c h w").float() / 127.5 - 1.0
    actions = world.infer_actions(real)
    assert actions.shape == (1, 7) and int(actions.min()) >= 0 and int(actions.max()) < 8
    # The tokenizer reproduces a real frame closely (the trained model, not an untrained one).
    recon = world.decode(world.encode(real[:, :4]))
    assert torch.nn.functional.mse_loss(recon, real[:, :4]).item() < 0.01

    def roll(acts: torch.Tensor) -> torch.Tensor:
        return world.rollout(real[:, :4], acts, steps=4, generator=torch.Generator().manual_seed(0))

    first = roll(actions[:, 3:7])
    assert first.shape == (1, 4, 3, 64, 64) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, roll(actions[:, 3:7]))  # seeded
    changed = actions[:, 3:7].clone()
    changed[:, 2] = (changed[:, 2] + 1) % 8
    assert torch.equal(roll(changed)[:, :2], first[:, :2])  # a later action never changes earlier frames


def test_genie_boxing_reward_head_scores_real_transitions(atari_dataset: Path) -> None:
    """The shipped reward head loads with the bundle and is scored by genie-env eval's heads metrics."""
    from genie_env.eval.heads import evaluate_heads
    from genie_env.models.heads import load_bundle_heads

    heads = load_bundle_heads(asset_path("genie-boxing-tiny"))
    assert heads is not None and list(heads.config.reward_values) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    result = evaluate_heads(heads, LeRobotDataset(atari_dataset), 2)
    assert result["heads_transitions"] == 60
    assert result["heads_reward_mae"] >= 0 and result["heads_return_error"] >= 0
