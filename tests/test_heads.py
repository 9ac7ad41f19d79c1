"""Tests of the world heads (reward / termination / object) and the ``heads`` training component."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genie_env.checkpoint import latest_checkpoint
from genie_env.data.features import Feature
from genie_env.data.lerobot import LeRobotWriter
from genie_env.models.heads import HEADS_DIR, WorldHeads, add_bundle_heads, load_bundle_heads
from training.components import COMPONENTS
from training.components.heads import HeadsComponent, TransitionDataset, heads_spec, reward_repeats
from training.config import HeadsConfig, load_run_config
from training.engine import train_component

# Tiny models on one intra-op thread; a fresh accelerate state for every test (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")

SIZE = 16
LENGTHS = [9, 12, 7]  # rows per episode
LEVELS = np.arange(16, 256, 32)  # grey levels a frame can take


def _brightness(episode: int, length: int) -> np.ndarray:
    """Per-row grey level of camera ``a``: random, never equal to the previous row's."""
    rng = np.random.default_rng(episode)
    b = [int(rng.choice(LEVELS))]
    while len(b) < length:
        nxt = int(rng.choice(LEVELS))
        if nxt != b[-1]:
            b.append(nxt)
    return np.array(b)


def _rows(episode: int, length: int) -> dict[str, np.ndarray]:
    """One synthetic episode in the recording convention: row t holds frame t and the reward of t-1 -> t."""
    b = _brightness(episode, length)
    t = np.arange(length)
    reward = np.zeros(length, np.float32)
    reward[1:] = np.sign(b[1:] - b[:-1])  # a known function of the transition (frame t-1, frame t)
    terminated = t == length - 1
    a = np.broadcast_to(b[:, None, None, None], (length, SIZE, SIZE, 3)).astype(np.uint8)
    return {
        "observation.images.a": a,
        "observation.images.b": (255 - a).astype(np.uint8),  # a second view, to check the view order
        "observation.state": np.stack([t, np.full(length, episode)], axis=1).astype(np.float32),
        "observation.goal": np.tile(np.array([[0.5, -0.5, 0.1]], np.float32) * (episode + 1), (length, 1)),
        "observation.object": np.stack([b / 100.0, t, np.full(length, episode)], axis=1).astype(np.float32),
        "action": np.zeros((length, 1), np.float32),
        "reward": reward[:, None],
        "terminated": terminated[:, None],
        "truncated": np.zeros((length, 1), bool),
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short episodes, two 16x16 cameras, reward = sign of the grey-level change t-1 -> t."""
    root = tmp_path_factory.mktemp("heads") / "synthetic"
    features = {
        "observation.images.a": Feature("video", (SIZE, SIZE, 3)),
        "observation.images.b": Feature("video", (SIZE, SIZE, 3)),
        "observation.state": Feature("float32", (2,)),
        "observation.goal": Feature("float32", (3,)),
        "observation.object": Feature("float32", (3,)),
        "action": Feature("float32", (1,)),
        "reward": Feature("float32", (1,)),
        "terminated": Feature("bool", (1,)),
        "truncated": Feature("bool", (1,)),
    }
    writer = LeRobotWriter.create(root, features, fps=10)
    for e, length in enumerate(LENGTHS):
        writer.add_episode(_rows(e, length), task="synthetic")
    return root


def _tiny(**overrides: object) -> WorldHeads:
    kwargs: dict = {
        "num_views": 2,
        "image_size": SIZE,
        "state_dim": 2,
        "goal_dim": 3,
        "reward_values": [-1.0, 0.0, 2.5],
        "termination": True,
        "object_dim": 3,
        "channels": [8, 16],
        "hidden": 32,
        "state_mean": [1.0, 2.0],
        "state_std": [3.0, 4.0],
        "object_mean": [0.5, -0.25, 0.4],
        "object_std": [0.1, 0.2, 0.05],
    }
    kwargs.update(overrides)
    torch.manual_seed(0)
    return WorldHeads(**kwargs)


def _inputs(batch: int = 4, views: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    prev = torch.rand(batch, views, 3, SIZE, SIZE, generator=g) * 2 - 1
    cur = torch.rand(batch, views, 3, SIZE, SIZE, generator=g) * 2 - 1
    return prev, cur, torch.randn(batch, 2, generator=g), torch.randn(batch, 3, generator=g)


# --- data alignment --------------------------------------------------------------------------------------


def test_transition_items_pair_rows_t_minus_1_and_t(synthetic: Path) -> None:
    ds = TransitionDataset(
        synthetic, state_key="observation.state", goal_key="observation.goal", object_key="observation.object"
    )
    assert len(ds) == sum(n - 1 for n in LENGTHS)  # every row t >= 1 once, never across episodes
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        e, t = int(item["episode_index"]), int(item["frame_index"])
        seen.add((e, t))
        b = _brightness(e, LENGTHS[e])
        grey = (item["frames"] + 1) * 127.5  # (V, 3, H, W)
        prev_grey = (item["prev_frames"] + 1) * 127.5
        assert item["frames"].shape == item["prev_frames"].shape == (2, 3, SIZE, SIZE)
        assert abs(float(prev_grey[0].mean()) - b[t - 1]) < 2 and abs(float(grey[0].mean()) - b[t]) < 2
        assert abs(float(grey[1].mean()) - (255 - b[t])) < 2  # view order: a, then b
        assert float(item["reward"]) == np.sign(b[t] - b[t - 1])  # the reward of the pair (t-1, t)
        assert bool(item["terminated"]) == (t == LENGTHS[e] - 1)
        assert item["state"].tolist() == [t, e]
        assert item["object"].tolist() == pytest.approx([b[t] / 100.0, t, e])
        assert item["goal"].tolist() == pytest.approx([0.5 * (e + 1), -0.5 * (e + 1), 0.1 * (e + 1)])
    assert seen == {(e, t) for e, n in enumerate(LENGTHS) for t in range(1, n)}


def test_spec_is_read_from_the_data(synthetic: Path) -> None:
    spec = heads_spec(synthetic, HeadsConfig(channels=[8, 16], hidden=32))
    samples = sum(n - 1 for n in LENGTHS)
    rewards = np.concatenate([_rows(e, n)["reward"][1:, 0] for e, n in enumerate(LENGTHS)])
    assert spec["num_views"] == 2 and spec["cameras"] == ["a", "b"] and spec["image_size"] == SIZE
    assert spec["reward_values"] == [-1.0, 1.0]  # row 0's reward 0 is not a transition
    assert spec["reward_counts"] == [int((rewards < 0).sum()), int((rewards > 0).sum())]
    assert spec["termination"] is True and spec["termination_rate"] == pytest.approx(len(LENGTHS) / samples)
    assert (spec["state_dim"], spec["goal_dim"], spec["object_dim"]) == (2, 3, 3)
    assert spec["goal_key"] == "observation.goal" and spec["object_key"] == "observation.object"
    objects = np.concatenate([_rows(e, n)["observation.object"][1:] for e, n in enumerate(LENGTHS)])
    assert spec["object_mean"] == pytest.approx(objects.mean(0).tolist(), abs=1e-5)
    assert spec["object_std"] == pytest.approx(objects.std(0).tolist(), abs=1e-5)

    # Switched-off inputs and heads, one episode, one camera.
    off = HeadsConfig(use_state=False, goal_key="none", predict_object=False, termination=False)
    spec = heads_spec(synthetic, off, episodes=[1], cameras=["b"])
    assert (spec["state_dim"], spec["goal_dim"], spec["object_dim"], spec["termination"]) == (0, 0, 0, False)
    assert spec["cameras"] == ["b"] and sum(spec["reward_counts"]) == LENGTHS[1] - 1
    with pytest.raises(ValueError, match="goal_key='observation.nope'"):
        heads_spec(synthetic, HeadsConfig(goal_key="observation.nope"))


def test_rare_rewards_are_oversampled(synthetic: Path) -> None:
    assert reward_repeats([900, 100, 9], 0.5) == [1, 3, 10]
    assert reward_repeats([900, 100, 9], 0.0) == [1, 1, 1]
    keys = {"state_key": "observation.state"}
    plain = TransitionDataset(synthetic, **keys)
    heavy = TransitionDataset(synthetic, **keys, reward_repeats={-1.0: 1, 1.0: 3})
    rewards = [float(plain[i]["reward"]) for i in range(len(plain))]
    assert len(heavy) == rewards.count(-1.0) + 3 * rewards.count(1.0)
    pairs = [
        (int(heavy[i]["episode_index"]), int(heavy[i]["frame_index"]), float(heavy[i]["reward"]))
        for i in range(len(heavy))
    ]
    for pair in set(pairs):  # every transition, with its own reward, as often as its reward value asks
        assert pairs.count(pair) == (3 if pair[2] == 1.0 else 1)
    assert {p[:2] for p in pairs} == {(int(it["episode_index"]), int(it["frame_index"])) for it in plain}


# --- the model -------------------------------------------------------------------------------------------


def test_forward_and_predict_shapes() -> None:
    model = _tiny()
    prev, cur, state, goal = _inputs()
    out = model(prev, cur, state, goal)
    assert out.reward_logits.shape == (4, 3) and out.termination_logits.shape == (4,) and out.object.shape == (4, 3)
    pred = model.predict(prev, cur, state, goal)
    assert set(pred) == {"reward_probs", "reward_mean", "termination_prob", "object"}
    assert pred["reward_probs"].shape == (4, 3) and pred["reward_mean"].shape == (4,)
    assert torch.allclose(pred["reward_probs"].sum(-1), torch.ones(4))
    expected = (pred["reward_probs"] * torch.tensor([-1.0, 0.0, 2.5])).sum(-1)
    assert torch.allclose(pred["reward_mean"], expected)
    assert torch.allclose(
        pred["object"], out.object * torch.tensor([0.1, 0.2, 0.05]) + torch.tensor([0.5, -0.25, 0.4])
    )
    assert ((pred["termination_prob"] > 0) & (pred["termination_prob"] < 1)).all()

    # Only the heads that exist.
    reward_only = _tiny(
        termination=False, object_dim=0, object_mean=[], object_std=[], state_dim=0, state_mean=[], state_std=[]
    )
    assert set(reward_only.predict(prev, cur, goal=goal)) == {"reward_probs", "reward_mean"}


def test_save_pretrained_round_trip_is_exact(tmp_path: Path) -> None:
    model = _tiny(goal_mean=[0.1, 0.2, 0.3], goal_std=[1.0, 2.0, 0.5], reward_counts=[5, 90, 5], cameras=["x", "y"])
    model.save_pretrained(tmp_path / "heads")
    loaded = WorldHeads.from_pretrained(tmp_path / "heads")
    config = json.loads(loaded.to_json_string())
    config.pop("_name_or_path")
    assert config == json.loads(model.to_json_string())
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("state_loc", "state_scale", "goal_loc", "goal_scale", "object_loc", "object_scale", "reward_table"):
        assert torch.equal(getattr(model, name), getattr(loaded, name)), name
    inputs = _inputs()
    for key, value in model.predict(*inputs).items():
        assert torch.equal(value, loaded.predict(*inputs)[key]), key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prev": "uint8"}, "prev_frames must be float"),
        ({"frames": (4, 3, 3, SIZE, SIZE)}, r"frames must have shape \(B, 2, 3, 16, 16\)"),
        ({"frames": (4, 2, 3, 8, 8)}, r"frames must have shape \(B, 2, 3, 16, 16\)"),
        ({"prev": (2, 2, 3, SIZE, SIZE)}, "prev_frames and frames must have the same shape"),
        ({"state": None}, r"state must be a float tensor of shape \(4, 2\)"),
        ({"state": (4, 5)}, r"state must have shape \(4, 2\)"),
        ({"goal": (3,)}, r"goal must have shape \(4, 3\)"),
        ({"frames": "list"}, "frames must be a torch.Tensor"),
    ],
)
def test_bad_inputs_are_named(change: dict, message: str) -> None:
    model = _tiny()
    prev, cur, state, goal = _inputs()
    args = {"prev": prev, "frames": cur, "state": state, "goal": goal}
    for key, value in change.items():
        if value == "uint8":
            args[key] = ((args[key] + 1) * 127.5).to(torch.uint8)
        elif value == "list":
            args[key] = args[key].tolist()
        elif value is None:
            args[key] = None
        else:
            args[key] = torch.zeros(value)
    with pytest.raises(ValueError, match=message):
        model(args["prev"], args["frames"], args["state"], args["goal"])


def test_bad_inputs_and_configs_are_named() -> None:
    prev, cur, state, goal = _inputs()
    no_state = _tiny(state_dim=0, state_mean=[], state_std=[])
    with pytest.raises(ValueError, match="takes no state"):
        no_state(prev, cur, state, goal)
    with pytest.raises(ValueError, match=r"frames must be in \[-1, 1\]"):
        _tiny().predict(prev, (cur + 1) * 127.5, state, goal)
    with pytest.raises(ValueError, match="strictly increasing"):
        _tiny(reward_values=[1.0, 0.0])
    with pytest.raises(ValueError, match="state_mean needs 2 values"):
        _tiny(state_mean=[1.0])
    with pytest.raises(ValueError, match="at least one head"):
        _tiny(reward_values=[], termination=False, object_dim=0, object_mean=[], object_std=[])


# --- training --------------------------------------------------------------------------------------------


def test_training_logits_are_adjusted_so_predictions_stay_calibrated() -> None:
    """At the recorded priors (reward -1: 90%, +1: 10%; terminated: 10%) the training loss is stationary on batches
    drawn as training draws them: rewards oversampled to 50/50 (reward_balance=1), terminations as recorded."""
    spec = {
        "num_views": 2,
        "image_size": SIZE,
        "reward_values": [-1.0, 1.0],
        "reward_counts": [90, 10],
        "termination": True,
        "termination_rate": 0.1,
        "channels": [8, 16],
        "hidden": 32,
    }
    component = HeadsComponent(HeadsConfig(reward_balance=1.0), spec=spec)
    heads = component.heads
    with torch.no_grad():
        for head, bias in ((heads.reward_head, [0.9, 0.1]), (heads.termination_head, [1 / 9])):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias).log())
    prev, cur, _, _ = _inputs(batch=10)
    batch = {
        "prev_frames": prev,
        "frames": cur,
        "reward": torch.tensor([-1.0, 1.0] * 5),
        "terminated": torch.arange(10) == 0,
    }
    loss, logs = component(batch)
    loss.backward()
    assert heads.reward_head.bias.grad.abs().max() < 1e-6
    assert heads.termination_head.bias.grad.abs().max() < 1e-6
    probs = heads.predict(prev, cur)
    assert torch.allclose(probs["reward_probs"], torch.tensor([0.9, 0.1]).expand(10, 2))
    assert torch.allclose(probs["termination_prob"], torch.full((10,), 0.1))
    assert {"train/loss", "train/reward_recall/-1", "train/reward_recall/1", "train/termination_loss"} <= set(logs)


def test_component_is_registered_and_needs_its_data() -> None:
    assert COMPONENTS["heads"] is HeadsComponent
    component = HeadsComponent(HeadsConfig())
    with pytest.raises(RuntimeError, match="no model yet"):
        component.models()


def test_training_through_the_engine_lowers_the_loss(synthetic: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.path={synthetic}",
        f"train.out_dir={tmp_path / 'run'}",
        "train.steps=60",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.log_every=20",
        "train.checkpoint_every=0",
        "component.channels=[8, 16]",
        "component.hidden=32",
    ]
    result = train_component("heads", load_run_config(HeadsConfig, overrides=overrides), progress=False)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses

    checkpoint = latest_checkpoint(tmp_path / "run")
    model = WorldHeads.from_pretrained(checkpoint / "heads")
    assert model.config.reward_values == [-1.0, 1.0] and model.config.termination
    ds = TransitionDataset(
        synthetic, state_key="observation.state", goal_key="observation.goal", object_key="observation.object"
    )
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    pred = model.predict(batch["prev_frames"], batch["frames"], batch["state"], batch["goal"])
    assert pred["reward_probs"].shape == (len(ds), 2) and pred["object"].shape == (len(ds), 3)
    # The reward head learned the sign of the change.
    accuracy = float(((pred["reward_mean"] > 0).float() * 2 - 1 == batch["reward"]).float().mean())
    assert accuracy > 0.8, accuracy

    # `genie-env bundle --heads RUN` copies the run's heads into a bundle, where the envs find them.
    bundle = tmp_path / "bundle"
    assert add_bundle_heads(bundle, tmp_path / "run") == bundle / HEADS_DIR
    loaded = load_bundle_heads(bundle)
    assert loaded is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
