"""Training the Genie networks with the shared engine: the three components, exact resume, the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genie_env.checkpoint import checkpoint_path, read_weights
from genie_env.models.genie import GenieWorldModel, LatentActionModel, VideoTokenizer
from training.components import GenieDynamicsComponent
from training.config import (
    ConfigError,
    DataConfig,
    GenieDynamicsConfig,
    GenieLAMConfig,
    GenieTokenizerConfig,
    RunConfig,
    load_run_config,
)
from training.engine import train_component
from training.pipeline import train_genie

TINY = ["train.batch_size=2", "train.log_every=1", "train.checkpoint_every=0", "train.lr=1e-3"]


def _lam_config(data: Path, out: Path, steps: int) -> RunConfig:
    overrides = [*TINY, f"data.path={data}", f"train.out_dir={out}", f"train.steps={steps}"]
    return load_run_config(GenieLAMConfig, overrides=[*overrides, "train.checkpoint_every=2"])


@pytest.fixture(scope="module")
def genie_run(atari_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline, 2 steps per stage, tiny preset."""
    out = tmp_path_factory.mktemp("genie")
    train_genie(atari_dataset, out, overrides=[*TINY, "train.steps=2", "train.sample_every=2"], progress=False)
    return out


def test_pipeline_trains_every_stage_and_assembles_a_bundle(genie_run: Path) -> None:
    for stage in ("tokenizer", "lam", "dynamics"):
        assert (checkpoint_path(genie_run / stage, 2) / stage).is_dir(), stage
    world = GenieWorldModel.from_pretrained(genie_run / "bundle")
    assert world.num_actions == 8 and world.codebook_size == 512 and world.frame_shape == (3, 64, 64)
    # The bundle holds exactly the trained weights of each stage.
    for name, model in (("tokenizer", world.tokenizer), ("lam", world.lam), ("dynamics", world.dynamics)):
        saved = read_weights(checkpoint_path(genie_run / name, 2) / name)
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key]), f"{name}.{key}"


def test_dynamics_keeps_tokenizer_and_lam_frozen(genie_run: Path, atari_dataset: Path) -> None:
    config = GenieDynamicsConfig(tokenizer=str(genie_run / "tokenizer"), lam=str(genie_run / "lam"))
    component = GenieDynamicsComponent(config).train()
    assert not component.tokenizer.training and not component.lam.training  # quantisers never restart codes
    assert list(component.models()) == ["dynamics"]
    trainable = {n.split(".")[0] for n, p in component.named_parameters() if p.requires_grad}
    assert trainable == {"dynamics"}
    before = {k: v.clone() for k, v in component.lam.state_dict().items()}
    dataset = GenieDynamicsComponent.build_dataset(config, DataConfig(path=str(atari_dataset)), seed=0)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    loss, logs = component(batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= logs["train/masked_accuracy"] <= 1
    assert all(torch.equal(before[k], v) for k, v in component.lam.state_dict().items())  # incl. usage buffers


def test_dynamics_needs_trained_tokenizer_and_lam() -> None:
    with pytest.raises(ValueError, match="component.tokenizer"):
        GenieDynamicsComponent(GenieDynamicsConfig())


def test_lam_resume_continues_exactly(atari_dataset: Path, tmp_path: Path) -> None:
    """4 straight steps == 2 steps + resume: the quantiser's restart counters and RNG come back too."""
    straight = train_component("lam", _lam_config(atari_dataset, tmp_path / "a", 4), progress=False)
    train_component("lam", _lam_config(atari_dataset, tmp_path / "b", 2), progress=False)
    resumed = train_component("lam", _lam_config(atari_dataset, tmp_path / "b", 4), resume=True, progress=False)
    assert resumed.losses == {s: straight.losses[s] for s in (3, 4)}
    a = read_weights(checkpoint_path(tmp_path / "a", 4) / "lam")
    b = read_weights(checkpoint_path(tmp_path / "b", 4) / "lam")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert LatentActionModel.from_pretrained(checkpoint_path(tmp_path / "b", 4) / "lam").quantizer.steps_unused.any()


def test_tokenizer_component_learns(atari_dataset: Path, tmp_path: Path) -> None:
    overrides = [*TINY, f"data.path={atari_dataset}", f"train.out_dir={tmp_path}", "train.steps=6"]
    result = train_component("tokenizer", load_run_config(GenieTokenizerConfig, overrides=overrides), progress=False)
    assert result.losses[6] < result.losses[1]
    assert isinstance(VideoTokenizer.from_pretrained(checkpoint_path(tmp_path, 6) / "tokenizer"), VideoTokenizer)


def test_pipeline_rejects_keys_no_stage_has(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kl_weight"):
        train_genie(tmp_path, tmp_path / "out", overrides=["component.kl_weight=1"], progress=False)
    with pytest.raises(ConfigError, match="set by the genie pipeline"):
        train_genie(tmp_path, tmp_path / "out", overrides=["component.lam=x"], progress=False)


def test_bundle_command_assembles_runs(genie_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genie_env.cli import main

    runs = [f"--{stage}={genie_run / stage}" for stage in ("tokenizer", "lam", "dynamics")]
    assert main(["bundle", "genie", *runs, "--out", str(tmp_path / "b"), "--steps", "3", "--temperature", "0"]) == 0
    assert GenieWorldModel.from_pretrained(tmp_path / "b").sampling == {"maskgit_steps": 3, "temperature": 0.0}
    assert main(["bundle", "genie", "--out", str(tmp_path / "c"), runs[0]]) == 2
    assert "--lam, --dynamics" in capsys.readouterr().err and not (tmp_path / "c").exists()
