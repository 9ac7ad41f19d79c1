"""GE-Sim training and inference: the ``gesim`` component, world-model bundles, rollouts, ``generate``, evaluation.

Models are tiny and untrained (a 2-block DiT, the tiny VAE); the data is the 3 x 12-step FetchPush fixture.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from einops import rearrange
from torch.utils.data import default_collate

from genie_env.checkpoint import CheckpointError, load_model, save_checkpoint
from genie_env.cli import main
from genie_env.data.lerobot import LeRobotDataset
from genie_env.data.video import read_video
from genie_env.models.gesim import GeSimVAE, build_dit, build_vae, flow
from genie_env.models.gesim.world import (
    GeSimWorldModel,
    assemble_gesim_bundle,
    calibrate_vae,
    episode_inputs,
    load_world_model,
)
from genie_env.start_states import StartStates
from training.components.gesim import GeSimComponent
from training.config import DataConfig, GeSimConfig, RunConfig, TrainConfig, to_dict
from training.engine import Trainer

CAMERAS = ["front", "side", "hand"]
DIT = {"num_layers": 2, "num_tasks": 2}


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``gesim-vae`` run directory holding one checkpoint of an untrained tiny VAE."""
    run = tmp_path_factory.mktemp("vae_run")
    torch.manual_seed(0)
    save_checkpoint(run / "checkpoints" / "step_00000001", {"vae": build_vae("tiny")}, {"step": 1})
    return run


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of untrained tiny models: 3 memory frames, one frame per chunk, 2 sampler steps."""
    torch.manual_seed(0)
    world = GeSimWorldModel(
        build_vae("tiny"), build_dit("tiny", **DIT), cameras=CAMERAS, n_memory=3, steps=2, tasks=["push"]
    )
    return world.save_pretrained(tmp_path_factory.mktemp("bundles") / "gesim")


def _component(vae_run: Path, **overrides: object) -> GeSimComponent:
    torch.manual_seed(0)
    component = GeSimComponent(GeSimConfig(vae=str(vae_run), num_tasks=2, **overrides))
    component.dit = build_dit("tiny", **DIT)  # smaller than the preset, for speed
    return component


def _batch(component: GeSimComponent, data: Path, items: tuple[int, ...] = (5, 20)) -> dict[str, torch.Tensor]:
    dataset = GeSimComponent.build_dataset(component.config, DataConfig(path=str(data)), seed=0)
    return default_collate([dataset[i] for i in items])


def _episode(data: Path, index: int = 0, frames: int = 6) -> dict[str, torch.Tensor]:
    """Batch-of-one world-model inputs: first frames (3), states, extrinsics, intrinsics of ``frames`` frames."""
    ep = episode_inputs(LeRobotDataset(data), index, CAMERAS)
    return {
        "first_frames": ep["frames"][None, :, :3].float() / 127.5 - 1.0,
        "states": ep["states"][None, :frames],
        "extrinsics": ep["extrinsics"][None, :, :frames],
        "intrinsics": ep["intrinsics"][None],
    }


# --- the training component --------------------------------------------------------------------------------


def test_loss_is_finite_and_trains_the_dit_only(vae_run: Path, fetch_dataset: Path) -> None:
    """Gradients reach every DiT parameter and no VAE parameter; the VAE stays in eval mode; only the DiT is saved."""
    component = _component(vae_run)
    batch = _batch(component, fetch_dataset)
    assert batch["frames"].shape == (2, 3, 5, 3, 64, 64) and batch["task_index"].tolist() == [0, 0]
    component.train()
    assert not component.vae.training and component.dit.training
    loss, logs = component(batch)
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert {"train/loss", "train/t_mean", "train/latent_std"} <= set(logs)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in component.vae.parameters())
    dit_grads = [p.grad for p in component.dit.parameters()]
    assert all(g is not None for g in dit_grads) and any(g.abs().sum() > 0 for g in dit_grads)
    trainable = {id(p) for p in component.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in component.dit.parameters()}
    assert set(component.models()) == {"dit"}


def test_loss_ignores_memory_frames(vae_run: Path, fetch_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The targets of memory frames carry no loss: changing them leaves the loss exactly equal, changing a future
    frame's target changes it, and the gradient of the loss at memory-frame predictions is exactly zero."""
    component = _component(vae_run, memory_noise=0.1, task_dropout=0.5)
    batch = _batch(component, fetch_dataset)
    n_memory = component.config.n_memory
    original = flow.flow_matching_loss

    def loss_with(target_change: slice | None) -> float:
        def patched(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            x0 = x0.clone()
            if target_change is not None:  # x0 enters the loss only through the target v = noise - x0
                x0[:, :, :, target_change] += 100.0 * torch.randn_like(x0[:, :, :, target_change])
            return original(pred, x0, noise, mask)

        monkeypatch.setattr(flow, "flow_matching_loss", patched)
        torch.manual_seed(1)  # the same posterior samples, times, noise and dropout in every call
        with torch.no_grad():
            return component(batch)[0].item()

    base = loss_with(None)
    assert loss_with(slice(0, n_memory)) == base
    assert loss_with(slice(0, 1)) == base
    assert abs(loss_with(slice(n_memory, None)) - base) > 1.0
    monkeypatch.setattr(flow, "flow_matching_loss", original)

    # The same through the network output: the loss's gradient at memory-frame predictions is zero.
    captured: list[torch.Tensor] = []

    def keep_output(_: torch.nn.Module, __: object, out: Transformer2DModelOutput) -> Transformer2DModelOutput:
        out.sample.retain_grad()
        captured.append(out.sample)
        return out

    handle = component.dit.register_forward_hook(keep_output)
    try:
        loss, _ = component(batch)
        loss.backward()
    finally:
        handle.remove()
    grad = captured[0].grad  # (B, V, 16, T_lat, h, w)
    assert torch.count_nonzero(grad[:, :, :, :n_memory]) == 0
    assert torch.count_nonzero(grad[:, :, :, n_memory:]) == grad[:, :, :, n_memory:].numel()


def test_latent_cache_gives_the_same_loss(vae_run: Path, fetch_dataset: Path) -> None:
    """Posteriors and maps cached per recorded frame give the loss of encoding and drawing every window afresh."""
    component = _component(vae_run).eval()
    batch = _batch(component, fetch_dataset, items=(3, 4, 17))
    losses = []
    for cache in (False, True, True):  # off, filling the cache, reading it
        component.config.cache_latents = cache
        torch.manual_seed(2)
        with torch.no_grad():
            losses.append(component(batch)[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[1] == losses[2]
    episodes, frames = batch["episode_index"].tolist(), batch["frame_index"].tolist()
    pairs = {(e, f) for e, row in zip(episodes, frames, strict=True) for f in row}
    assert len(pairs) > 5 and set(component._posteriors) == set(component._maps) == pairs


def test_map_defaults_are_the_worlds() -> None:
    """A bundle whose run config predates a map setting falls back to the world's default: the same as training's."""
    world_defaults = inspect.signature(GeSimWorldModel.__init__).parameters
    for name in ("max_opening", "disc_radius_m"):
        assert getattr(GeSimConfig(), name) == world_defaults[name].default


def test_component_config_errors(vae_run: Path) -> None:
    """No VAE, a clip length the causal VAE cannot encode, and an unknown task id are named."""
    with pytest.raises(ValueError, match="component.vae"):
        GeSimComponent(GeSimConfig())
    with pytest.raises(ValueError, match="4n \\+ 1"):
        GeSimComponent(GeSimConfig(vae=str(vae_run), n_future=2))
    component = GeSimComponent(GeSimConfig(vae=str(vae_run), n_future=2, future_encoding="per_frame"))
    with pytest.raises(ValueError, match="num_tasks"):
        component._task_ids({"frames": torch.zeros(1), "task_index": torch.tensor([7])})


def test_train_steps_then_bundle_from_runs(vae_run: Path, fetch_dataset: Path, tmp_path: Path) -> None:
    """Two engine steps with samples; the run's DiT and the VAE run assemble into a loadable bundle."""
    config = GeSimConfig(vae=str(vae_run), num_tasks=2, sample_steps=2, disc_radius_m=0.07)
    component = _component(vae_run, sample_steps=2, disc_radius_m=0.07)
    data = DataConfig(path=str(fetch_dataset), episodes=[0])
    train = TrainConfig(steps=2, batch_size=2, sample_every=2, checkpoint_every=0, out_dir=str(tmp_path / "run"))
    dataset = GeSimComponent.build_dataset(config, data, seed=0)
    run_config = to_dict(RunConfig(train=train, data=data, component=config))
    result = Trainer(component, dataset, train, name="gesim", run_config=run_config, progress=False).fit()
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses.values())
    assert sorted(p.name for p in result.checkpoint.iterdir() if p.is_dir()) == ["dit"]

    out = assemble_gesim_bundle(None, tmp_path / "run", tmp_path / "bundle", steps=3, schedule="karras")
    spec = json.loads((out / "world_model.json").read_text())
    assert spec["type"] == "gesim" and spec["sampling"] == {"steps": 3, "schedule": "karras"}
    assert spec["cameras"] == CAMERAS and spec["tasks"] == ["push the block to the goal"]
    assert spec["n_memory"] == 4 and spec["chunk"] == 1 and spec["fps"] == LeRobotDataset(fetch_dataset).fps
    assert spec["disc_radius_m"] == 0.07  # the world draws its trajectory maps as the DiT saw them in training
    world = load_world_model(out)
    assert world.disc_radius_m == 0.07
    trained = component.dit.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in world.dit.state_dict().items())
    assert load_world_model(tmp_path / "run").describe()["cameras"] == CAMERAS  # a run works directly too

    # The CLI assembles the same bundle and cuts its start-state bank from a recording.
    args = ["bundle", "gesim", "--dit", str(tmp_path / "run"), "--out", str(tmp_path / "cli")]
    assert main([*args, "--starts", str(fetch_dataset), "--start-episodes", "1"]) == 0
    bank = StartStates.load(tmp_path / "cli")
    assert len(bank) == 1 and bank.cameras == CAMERAS and bank.frames.shape[2] == 1
    assert json.loads((tmp_path / "cli" / "world_model.json").read_text())["cameras"] == CAMERAS


def test_calibrated_vae_gives_unit_scale_latents(vae_run: Path, fetch_dataset: Path, tmp_path: Path) -> None:
    """calibrate_vae stores per-channel latent statistics; the calibrated VAE's normalised latents are standardised."""
    out = calibrate_vae(vae_run, fetch_dataset, tmp_path / "calibrated", max_frames=60)
    vae = load_model(out, "vae", GeSimVAE)
    assert vae.config.latents_std != [1.0] * 16
    frames = episode_inputs(LeRobotDataset(fetch_dataset), 2, CAMERAS)["frames"][:, ::3]  # (V, 5, 3, H, W)
    x = rearrange(frames.float() / 127.5 - 1.0, "v t c h w -> v c t h w")
    z = vae.encode_frames(x, per_frame=True, sample=False)
    assert abs(z.mean().item()) < 0.5 and 0.5 < z.std().item() < 1.5

    # The command writes the same statistics.
    args = ["calibrate-vae", str(vae_run), "--data", str(fetch_dataset), "--out", str(tmp_path / "cli")]
    assert main([*args, "--frames", "60"]) == 0
    assert load_model(tmp_path / "cli", "vae", GeSimVAE).config.latents_std == vae.config.latents_std


# --- the world model ---------------------------------------------------------------------------------------


def test_bundle_round_trip(bundle: Path, tmp_path: Path) -> None:
    """save_pretrained -> from_pretrained keeps every weight and setting; bad bundles are named."""
    world = GeSimWorldModel.from_pretrained(bundle)
    again = GeSimWorldModel.from_pretrained(world.save_pretrained(tmp_path / "copy"))
    assert again.describe() == world.describe()
    assert world.describe()["sampling"] == {"steps": 2, "schedule": "linear"} and world.n_memory == 3
    for a, b in ((world.vae, again.vae), (world.dit, again.dit)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not again.training and not any(p.requires_grad for p in again.parameters())

    spec = json.loads((tmp_path / "copy" / "world_model.json").read_text())
    (tmp_path / "copy" / "world_model.json").write_text(json.dumps({**spec, "type": "genie"}))
    with pytest.raises(CheckpointError, match="not 'gesim'"):
        GeSimWorldModel.from_pretrained(tmp_path / "copy")
    with pytest.raises(CheckpointError, match="no GE-Sim bundle or run"):
        load_world_model(tmp_path / "missing")


def test_rollout_is_seeded_batched_and_reselects_memory(bundle: Path, fetch_dataset: Path) -> None:
    """Same seed, same frames; per-row generators make rows independent of the batch; memory is re-chosen every
    chunk, evenly spaced over the history, always with frame 0 and the newest frame."""
    world = load_world_model(bundle)
    ep = _episode(fetch_dataset, frames=6)

    def run(seed: int) -> torch.Tensor:
        return world.rollout(**ep, generator=torch.Generator().manual_seed(seed)).frames

    first = world.rollout(**ep, generator=torch.Generator().manual_seed(0))
    assert first.frames.shape == (1, 3, 6, 3, 64, 64) and first.n_given == 3
    assert torch.equal(first.frames[:, :, :3], ep["first_frames"])
    assert torch.equal(run(0), first.frames) and not torch.equal(run(1), first.frames)
    assert first.chunk_starts == [3, 4, 5]
    assert first.memory_indices == [[0, 1, 2], [0, 2, 3], [0, 2, 4]]
    for start, memory in zip(first.chunk_starts, first.memory_indices, strict=True):
        assert memory[-1] == start - 1 and memory[0] == 0 and memory == sorted(memory)

    # Two rows with their own generators: row 0 equals the single-row rollout with the same seed.
    both = {k: torch.cat([v, v]) for k, v in ep.items()}
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(5)]
    pair = world.rollout(**both, generator=gens).frames
    assert torch.allclose(pair[0], first.frames[0], atol=1e-5) and not torch.allclose(pair[1], pair[0])


def test_chunked_rollout(bundle: Path, fetch_dataset: Path) -> None:
    """Clip chunks of 4n + 1 frames (the last one padded with the final pose and cut), and per-frame chunks."""
    world = load_world_model(bundle)
    ep = _episode(fetch_dataset, frames=9)
    result = world.rollout(**ep, chunk=5, generator=torch.Generator().manual_seed(0))
    assert result.chunk_starts == [3, 8] and result.frames.shape[2] == 9
    with pytest.raises(ValueError, match="4n \\+ 1"):
        world.rollout(**ep, chunk=2)
    world.future_encoding = "per_frame"
    assert world.rollout(**ep, chunk=2).chunk_starts == [3, 5, 7]


# --- generate and evaluate ---------------------------------------------------------------------------------


def test_generate_writes_a_readable_mp4(bundle: Path, fetch_dataset: Path, tmp_path: Path) -> None:
    """``genie-env generate`` writes generated / real / trajectory rows of the three views for every frame."""
    out = tmp_path / "gen.mp4"
    code = main(
        ["generate", str(bundle), "--episode", f"{fetch_dataset}:1", "--out", str(out), "--max-frames", "6"]
        + ["--steps", "1", "--seed", "3", "--no-progress"]
    )
    assert code == 0
    video = read_video(out)
    assert video.shape == (6, 4 * (3 * 64 + 4), 4 * (3 * 64 + 4), 3)
    # The first frames are given: the generated row equals the real row below it (up to the lossy preview codec).
    top, middle = video[0, : 4 * 64].astype(int), video[0, 4 * 66 : 4 * 130].astype(int)
    assert np.abs(top - middle).mean() < 3
    assert main(["generate", str(bundle), "--episode", str(fetch_dataset), "--out", str(out)]) == 2


def test_evaluate_gesim_reports_every_metric(bundle: Path, fetch_dataset: Path, tmp_path: Path) -> None:
    """Per-view next-frame scores, rollout / copy-last / other-pose PSNR at each horizon, the action delta, a PNG."""
    from genie_env.eval.gesim import evaluate_gesim

    png = tmp_path / "grid.png"
    result = evaluate_gesim(
        bundle, fetch_dataset, 2, horizon=4, windows_per_episode=1, steps=1, png=png, progress=False
    )
    for key in ("next_frame_psnr", "next_frame_ssim"):
        assert set(result[key]) == {*CAMERAS, "mean"} and all(math.isfinite(v) for v in result[key].values())
    for key in ("rollout_psnr", "rollout_ssim", "copy_last_psnr", "other_pose_psnr"):
        assert set(result[key]) == {"1", "4"} and all(math.isfinite(v) for v in result[key].values())
    assert result["copy_last_psnr"]["1"] > 15  # neighbouring real frames are similar
    delta = result["rollout_psnr"]["4"] - result["other_pose_psnr"]["4"]
    assert result["action_delta_psnr"] == pytest.approx(delta)
    assert result["windows"] == 2 and result["steps"] == 1 and result["seconds"] > 0 and png.is_file()
    json.dumps(result, allow_nan=False)
    with pytest.raises(ValueError, match="prompt_frames \\+ horizon"):
        evaluate_gesim(bundle, fetch_dataset, 1, horizon=16, progress=False)
