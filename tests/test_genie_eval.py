"""Genie world-model bundles and held-out evaluation: metrics, bundle I/O, rollouts, ``genie-env eval``.

Models are tiny and untrained (64x64 frames, 8x8 token grid, one block each), so the whole file runs in seconds;
the numbers they produce are meaningless, but every shape, key, error and determinism guarantee is checked.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from genie_env.checkpoint import CheckpointError, checkpoint_path, save_checkpoint
from genie_env.cli import main
from genie_env.eval import EVALUATORS, evaluate, get_evaluator
from genie_env.eval.genie import _lam_decoder_psnr, evaluate_genie
from genie_env.eval.metrics import PSNR_CAP_DB, normalized_mutual_info, psnr, ssim, to_uint8
from genie_env.models.bundle import WORLD_MODEL_FILE
from genie_env.models.genie import (
    DynamicsModel,
    GenieWorldModel,
    LatentActionModel,
    MaskGITRollout,
    VideoTokenizer,
    assemble_genie_bundle,
    build_model,
)

CODES, ACTIONS = 64, 4
SMALL = {"mlp_ratio": 2.0}


def tiny_parts(
    codebook_size: int = CODES, num_actions: int = ACTIONS
) -> tuple[VideoTokenizer, LatentActionModel, DynamicsModel]:
    """Tokenizer (patch 8: 8x8 grid), LAM, dynamics: one block of width 32 each, at the tiny preset's 64x64."""
    torch.manual_seed(0)
    width = {"encoder_dim": 32, "encoder_depth": 1, "encoder_heads": 2, "encoder_head_dim": 16}
    width |= {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "decoder_head_dim": 16}
    tokenizer = build_model(
        "tiny", "tokenizer", patch_size=8, codebook_size=codebook_size, latent_dim=8, **width, **SMALL
    )
    lam = build_model("tiny", "lam", patch_size=16, num_actions=num_actions, action_dim=8, **width, **SMALL)
    dynamics = build_model(
        "tiny",
        "dynamics",
        codebook_size=codebook_size,
        num_actions=num_actions,
        grid_height=8,
        grid_width=8,
        dim=32,
        depth=1,
        num_heads=2,
        head_dim=16,
        **SMALL,
    )
    assert isinstance(tokenizer, VideoTokenizer) and isinstance(lam, LatentActionModel)
    assert isinstance(dynamics, DynamicsModel)
    return tokenizer, lam, dynamics


@pytest.fixture(scope="module")
def world() -> GenieWorldModel:
    return GenieWorldModel(*tiny_parts(), maskgit_steps=2, temperature=1.0, provenance={"note": "test"})


@pytest.fixture(scope="module")
def bundle(world: GenieWorldModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world.save_pretrained(tmp_path_factory.mktemp("bundles") / "genie")


def frames(b: int, t: int, seed: int = 0) -> torch.Tensor:
    """Random frames ``(b, t, 3, 64, 64)`` in ``[-1, 1]``."""
    return torch.rand(b, t, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- metrics -------------------------------------------------------------------------------------------------


def test_psnr_known_values_batched_and_capped() -> None:
    a = torch.zeros(2, 5, 3, 16, 16, dtype=torch.uint8)
    assert psnr(a, a).shape == (2, 5)
    assert torch.all(psnr(a, a) == PSNR_CAP_DB)  # identical images: capped, not inf
    one_off = a + 1  # MSE 1 on a peak of 255
    assert torch.allclose(psnr(a, one_off), torch.tensor(20 * math.log10(255.0), dtype=torch.float64))
    x = torch.zeros(4, 3, 8, 8)
    y = torch.full_like(x, 0.2)  # MSE 0.04 on a peak-to-peak range of 2
    assert torch.allclose(psnr(x, y), torch.full((4,), 10 * math.log10(4 / 0.04), dtype=torch.float64))
    assert torch.all(psnr(x, x) == PSNR_CAP_DB)
    with pytest.raises(ValueError, match="both be uint8"):
        psnr(a[0, 0, :, :8, :8], x[0])
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:1])


def test_to_uint8_maps_the_ends_of_the_range() -> None:
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0])).tolist() == [0, 128, 255, 255]


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Independent SSIM: scipy Gaussian filtering (radius 5 = 11 taps), border of 5 cropped, as scikit-image does."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    maps = []
    for xc, yc in zip(x, y, strict=True):

        def f(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, 1.5, truncate=3.5)

        mx, my = f(xc), f(yc)
        vx, vy, cov = f(xc * xc) - mx**2, f(yc * yc) - my**2, f(xc * yc) - mx * my
        m = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        maps.append(m[5:-5, 5:-5].mean())
    return float(np.mean(maps))


def test_ssim_identical_constant_and_reference() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (2, 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    assert ssim(a, a).shape == (2, 3)
    assert torch.allclose(ssim(a, a), torch.ones(2, 3, dtype=torch.float64))
    f = a.float() / 127.5 - 1
    assert torch.allclose(ssim(f, f), torch.ones(2, 3, dtype=torch.float64))

    # Constant images: no variance, so SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    m1, m2 = 100.0, 150.0
    c1 = (0.01 * 255) ** 2
    grey = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    const = ssim(grey, grey + 50)
    assert const.item() == pytest.approx((2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1), abs=1e-12)

    noisy = (a.int() + torch.randint(-30, 31, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    ours = ssim(a, noisy)
    for i, j in [(0, 0), (1, 2)]:
        expected = _ssim_reference(a[i, j].numpy(), noisy[i, j].numpy(), 255.0)
        assert ours[i, j].item() == pytest.approx(expected, abs=1e-10)
    assert 0 < ours.min() < ours.max() < 1
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[..., :8, :8], a[..., :8, :8])


def test_normalized_mutual_info() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, 20_000)
    assert normalized_mutual_info(x, x) == pytest.approx(1.0)
    assert normalized_mutual_info(x, (x * 3 + 5) % 8) == pytest.approx(1.0)  # renamed labels
    assert normalized_mutual_info(x, rng.integers(0, 18, 20_000)) < 0.01  # independent
    a, b = np.array([0, 0, 1, 1, 2, 2]), np.array([5, 5, 7, 7, 7, 7])  # b merges two classes of a
    mi = math.log(3) - 2 / 3 * math.log(2)  # H(a) - H(a | b)
    h_a, h_b = math.log(3), -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert normalized_mutual_info(a, b) == pytest.approx(mi / ((h_a + h_b) / 2))
    assert normalized_mutual_info(b, a) == pytest.approx(normalized_mutual_info(a, b))
    assert normalized_mutual_info(np.zeros(5), np.zeros(5)) == 1.0
    assert normalized_mutual_info(np.zeros(4), np.array([0, 1, 0, 1])) == 0.0
    with pytest.raises(ValueError, match="equal length"):
        normalized_mutual_info(np.zeros(3), np.zeros(4))


# --- bundles -------------------------------------------------------------------------------------------------


def test_bundle_round_trip_is_exact(world: GenieWorldModel, bundle: Path) -> None:
    assert sorted(os.listdir(bundle)) == ["dynamics", "lam", "tokenizer", WORLD_MODEL_FILE]
    info = json.loads((bundle / WORLD_MODEL_FILE).read_text())
    assert info["type"] == "genie" and info["sampling"] == {"maskgit_steps": 2, "temperature": 1.0}
    assert info["provenance"] == {"note": "test"} and "genie_env_version" in info
    loaded = GenieWorldModel.from_pretrained(bundle)
    assert loaded.sampling == world.sampling and not loaded.training
    ours, theirs = world.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Saving again replaces the bundle atomically and leaves no temporary directories behind.
    loaded.save_pretrained(bundle)
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]


def test_bundle_errors_name_the_path(world: GenieWorldModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        GenieWorldModel.from_pretrained(tmp_path / "nope")
    path = world.save_pretrained(tmp_path / "b")
    (path / WORLD_MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(path / WORLD_MODEL_FILE))):
        GenieWorldModel.from_pretrained(path)

    path = world.save_pretrained(tmp_path / "b")
    for file in (path / "lam").iterdir():
        file.unlink()
    (path / "lam").rmdir()
    with pytest.raises(CheckpointError, match=re.escape(str(path / "lam"))):
        GenieWorldModel.from_pretrained(path)

    path = world.save_pretrained(tmp_path / "b")
    (path / "dynamics" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        GenieWorldModel.from_pretrained(path)

    path = world.save_pretrained(tmp_path / "b")
    info = json.loads((path / WORLD_MODEL_FILE).read_text())
    (path / WORLD_MODEL_FILE).write_text(json.dumps({**info, "type": "gesim"}))
    with pytest.raises(CheckpointError, match="'gesim'"):
        GenieWorldModel.from_pretrained(path)
    (path / WORLD_MODEL_FILE).write_text(json.dumps({**info, "sampling": {"maskgit_steps": 0}}))
    with pytest.raises(CheckpointError, match="maskgit_steps"):
        GenieWorldModel.from_pretrained(path)


def test_mismatched_networks_are_rejected(world: GenieWorldModel, tmp_path: Path) -> None:
    tokenizer, lam, _ = tiny_parts()
    *_, other_dynamics = tiny_parts(codebook_size=32, num_actions=6)
    with pytest.raises(ValueError, match="codebook_size = 32 but tokenizer codebook_size = 64.*num_actions = 6"):
        GenieWorldModel(tokenizer, lam, other_dynamics)
    # The same check guards bundles assembled by hand.
    path = world.save_pretrained(tmp_path / "b")
    other_dynamics.save_pretrained(path / "dynamics")
    with pytest.raises(ValueError, match="do not fit together"):
        GenieWorldModel.from_pretrained(path)


def test_assemble_bundle_from_runs_prefers_ema(tmp_path: Path) -> None:
    tokenizer, lam, dynamics = tiny_parts()
    _, ema_lam, _ = tiny_parts()
    with torch.no_grad():
        ema_lam.to_action.weight.add_(1.0)  # distinguishable from the raw weights
    save_checkpoint(checkpoint_path(tmp_path / "tok", 5), {"tokenizer": tokenizer}, {"step": 5})
    save_checkpoint(checkpoint_path(tmp_path / "lam", 7), {"lam": lam, "lam_ema": ema_lam}, {"step": 7})
    dyn_ckpt = save_checkpoint(checkpoint_path(tmp_path / "dyn", 9), {"dynamics": dynamics}, {"step": 9})
    out = assemble_genie_bundle(
        tmp_path / "tok", tmp_path / "lam", dyn_ckpt, tmp_path / "bundle", sampling={"temperature": 0.5}
    )
    world = GenieWorldModel.from_pretrained(out)
    assert world.sampling == {"maskgit_steps": 25, "temperature": 0.5}
    assert torch.equal(world.lam.to_action.weight, ema_lam.to_action.weight)
    assert world.provenance["lam"]["folder"] == "lam_ema" and world.provenance["lam"]["step"] == 7
    assert world.provenance["dynamics"]["checkpoint"] == str(dyn_ckpt.resolve())
    with pytest.raises(ValueError, match="unknown sampling keys"):
        assemble_genie_bundle(tmp_path / "tok", tmp_path / "lam", dyn_ckpt, tmp_path / "x", sampling={"steps": 3})
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        assemble_genie_bundle(tmp_path / "none", tmp_path / "lam", dyn_ckpt, tmp_path / "x")


# --- rollouts ------------------------------------------------------------------------------------------------


def test_rollout_shapes_determinism_and_cached_decoding(world: GenieWorldModel) -> None:
    prompt = frames(2, 3)
    actions = torch.tensor([[0, 1, 2, 3], [3, 3, 0, 1]])

    def run(seed: int) -> torch.Tensor:
        return world.rollout(prompt, actions, generator=torch.Generator().manual_seed(seed))

    out = run(0)
    assert out.shape == (2, 4, 3, 64, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, run(0))
    assert not torch.equal(out, run(1))

    # The primed decode cache renders exactly what a full decode of prompt + generated tokens gives.
    generator = torch.Generator().manual_seed(0)
    sampler = MaskGITRollout(world.dynamics, steps=world.maskgit_steps, temperature=world.temperature)
    prompt_tokens = world.encode(prompt)
    sampler.reset(prompt_tokens, world.infer_actions(prompt))
    generated = torch.stack([sampler.step(a, generator=generator) for a in actions.T], dim=1)
    full = world.decode(torch.cat([prompt_tokens, generated], dim=1))[:, 3:]
    torch.testing.assert_close(out, full, atol=1e-5, rtol=0)

    one = world.rollout(prompt[:, :1], actions[:, :2], steps=1, temperature=0.0)  # a single prompt frame
    assert one.shape == (2, 2, 3, 64, 64)


def test_rollout_is_causal_in_the_actions(tmp_path: Path) -> None:
    tokenizer, lam, dynamics = tiny_parts()
    with torch.no_grad():
        dynamics.action_embed.weight.mul_(200.0)  # make actions matter, so the test is not vacuous
    world = GenieWorldModel(tokenizer, lam, dynamics, maskgit_steps=2)
    prompt = frames(2, 2, seed=3)
    base = torch.zeros(2, 5, dtype=torch.long)
    changed = base.clone()
    k = 3
    changed[:, k] = 2
    out_a = world.rollout(prompt, base, generator=torch.Generator().manual_seed(0))
    out_b = world.rollout(prompt, changed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_a[:, :k], out_b[:, :k])
    assert not torch.equal(out_a[:, k], out_b[:, k])


def test_rollout_input_errors(world: GenieWorldModel) -> None:
    prompt = frames(2, 2)
    ok = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="float in \\[-1, 1\\]"):
        world.rollout(to_uint8(prompt), ok)
    with pytest.raises(ValueError, match="must lie in \\[-1, 1\\]"):
        world.rollout((prompt + 1) * 127.5, ok)
    with pytest.raises(ValueError, match=r"\(B, T>=1, 3, 64, 64\)"):
        world.rollout(prompt[..., :32], ok)
    with pytest.raises(ValueError, match="integer latent action ids"):
        world.rollout(prompt, ok.float())
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\), got values in \[0, 4\]"):
        world.rollout(prompt, ok + torch.tensor([0, 0, 4]))
    with pytest.raises(ValueError, match=r"actions must be \(2, N>=1\)"):
        world.rollout(prompt, ok[:1])
    with pytest.raises(ValueError, match="prompt_actions must have shape"):
        world.rollout(prompt, ok, prompt_actions=ok)
    with pytest.raises(ValueError, match="maskgit_steps"):
        world.rollout(prompt, ok, steps=0)


# --- evaluation ----------------------------------------------------------------------------------------------

EXPECTED_KEYS = {
    "tokenizer_psnr",
    "tokenizer_ssim",
    "codebook_usage",
    "action_usage",
    "action_histogram",
    "action_nmi",
    "lam_action_gain_psnr",
    "rollout_psnr",
    "rollout_ssim",
    "copy_last_psnr",
    "random_action_psnr",
    "delta_psnr_t4",
    "episodes",
    "windows",
    "prompt_frames",
    "horizon",
    "steps",
    "temperature",
    "seed",
    "dataset",
    "bundle",
    "seconds",
}


def test_eval_cli_end_to_end(
    bundle: Path, atari_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "eval.json", tmp_path / "grid.png"
    args = ["eval", str(bundle), "--data", str(atari_dataset), "--episodes", "2", "--json", str(out)]
    args += ["--png", str(png), "--prompt-frames", "2", "--horizon", "4", "--windows-per-episode", "2"]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "rollout_psnr" in printed and "delta_psnr_t4" in printed
    result = json.loads(out.read_text())
    assert set(result) >= EXPECTED_KEYS
    assert result["windows"] == 4 and result["steps"] == 2 and result["temperature"] == 1.0
    for key in ("rollout_psnr", "rollout_ssim", "copy_last_psnr", "random_action_psnr"):
        assert set(result[key]) == {"1", "4"}
    assert result["delta_psnr_t4"] == pytest.approx(result["rollout_psnr"]["4"] - result["random_action_psnr"]["4"])
    assert len(result["action_histogram"]) == ACTIONS and sum(result["action_histogram"]) == 4 * 5
    assert 0 <= result["action_nmi"] <= 1  # Atari actions are discrete
    assert 0 < result["codebook_usage"] <= 1 and 0 < result["action_usage"] <= 1
    # 4 windows x 3 rows of 4 horizons, each frame upscaled 2x.
    assert iio.imread(png).shape == (4 * 3 * 128 + 4 * 2 * 2 + 3 * 8, 4 * 128 + 3 * 2, 3)


@torch.no_grad()
def test_lam_action_gain_measures_what_the_codes_tell_the_decoder(bundle: Path) -> None:
    world = GenieWorldModel.from_pretrained(bundle)
    torch.nn.init.normal_(world.lam.decoder_out.weight, std=0.05)  # untrained, the residual decoder copies x_t
    real = frames(2, 5)
    real_u8 = to_uint8(real)
    first, other = torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)

    def scores(actions: torch.Tensor) -> torch.Tensor:
        return _lam_decoder_psnr(world, real, actions, real_u8)

    assert not torch.equal(scores(first), scores(other))
    # A decoder deaf to the actions gains exactly nothing from them.
    world.lam.action_in.weight.zero_()
    world.lam.action_in.bias.zero_()
    assert torch.equal(scores(first), scores(other))


def test_evaluate_genie_is_deterministic_and_checks_inputs(bundle: Path, atari_dataset: Path) -> None:
    kwargs = {"prompt_frames": 3, "horizon": 1, "windows_per_episode": 1, "progress": False, "seed": 4}
    a = evaluate_genie(bundle, atari_dataset, 1, batch_size=1, **kwargs)
    b = evaluate(bundle, atari_dataset, 1, batch_size=1, **kwargs)
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k not in ("seconds", "rollout_frames_per_s")} == {
        k: v for k, v in b.items() if k not in ("seconds", "rollout_frames_per_s")
    }
    assert a["delta_psnr_t4"] is None and set(a["rollout_psnr"]) == {"1"}  # horizon 1: no t=4
    with pytest.raises(ValueError, match="has 2 episodes, 3 requested"):
        evaluate_genie(bundle, atari_dataset, 3, progress=False)
    with pytest.raises(ValueError, match="a window needs prompt_frames \\+ horizon = 104"):
        evaluate_genie(bundle, atari_dataset, 1, horizon=100, progress=False)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        evaluate_genie(bundle, atari_dataset, 1, horizon=0, progress=False)
    with pytest.raises(ValueError, match="camera 'front' not in dataset"):
        evaluate_genie(bundle, atari_dataset, 1, camera="front", progress=False)


def test_eval_dispatch_on_bundle_type(bundle: Path, tmp_path: Path) -> None:
    assert set(EVALUATORS) >= {"genie"} and get_evaluator("genie") is evaluate_genie
    other = tmp_path / "other"
    other.mkdir()
    (other / WORLD_MODEL_FILE).write_text(json.dumps({"type": "mystery"}))
    with pytest.raises(ValueError, match="no evaluator for world-model type 'mystery'; known types"):
        evaluate(other, tmp_path, 1)
    with pytest.raises(CheckpointError, match="world-model description missing"):
        evaluate(tmp_path, tmp_path, 1)


def test_eval_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("CHECKPOINT_DIR", "--data", "--episodes", "--json", "--png", "--steps", "--temperature", "--seed"):
        assert option in out
