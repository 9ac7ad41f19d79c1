"""Training windows: episode boundaries, memory selection, alignment, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genie_env.data.lerobot import LeRobotDataset
from genie_env.data.windows import WindowConfig, WindowDataset, select_memory


@pytest.mark.parametrize("mode", ["uniform", "random", "contiguous"])
def test_memory_selection(mode: str) -> None:
    rng = np.random.default_rng(0)
    cfg = WindowConfig(n_memory=4, n_future=2, memory_mode=mode)
    for s in range(1, 40):
        mem = select_memory(s, cfg, rng)
        assert len(mem) == 4 and mem[-1] == s - 1 and mem.min() >= 0
        assert np.all(np.diff(mem) >= 0)
    assert list(select_memory(30, WindowConfig(4, 1, "uniform"), rng)) == [0, 10, 19, 29]
    assert list(select_memory(30, WindowConfig(4, 1, "contiguous"), rng)) == [26, 27, 28, 29]
    span = select_memory(30, WindowConfig(4, 1, "uniform", max_memory_span=6), rng)
    assert span[0] == 23


def test_windows_stay_in_episodes_and_align(fetch_dataset: Path) -> None:
    ds = LeRobotDataset(fetch_dataset)
    windows = WindowDataset(ds, WindowConfig(n_memory=3, n_future=4, memory_mode="random"), seed=1)
    episodes = {i: ds.load_episode(i) for i in range(ds.num_episodes)}
    assert len(windows) == 3 * (13 - 4)  # anchors s in [1, 9] per 13-frame episode
    for item in range(len(windows)):
        w = windows[item]
        ep = episodes[int(w["episode_index"])]
        idx = w["frame_index"].numpy()
        assert idx.max() < len(ep["action"])
        assert list(idx[3:]) == list(range(idx[3], idx[3] + 4)) and idx[2] == idx[3] - 1
        np.testing.assert_array_equal(w["actions"].numpy(), ep["action"][idx])
        np.testing.assert_array_equal(w["state"].numpy(), ep["observation.state"][idx])
        front = (w["frames"][0].permute(0, 2, 3, 1).numpy() + 1) * 127.5
        np.testing.assert_allclose(front, ep["observation.images.front"][idx], atol=1e-3)
        np.testing.assert_array_equal(w["extrinsics"][2].numpy(), ep["observation.cameras.hand.extrinsics"][idx])
    assert w["frames"].shape == (3, 7, 3, 64, 64) and w["intrinsics"].shape == (3, 3, 3)
    assert w["is_memory"].tolist() == [True] * 3 + [False] * 4


def test_windows_are_reproducible(fetch_dataset: Path) -> None:
    cfg = WindowConfig(n_memory=4, n_future=1, memory_mode="random")
    a, b = WindowDataset(fetch_dataset, cfg, seed=5), WindowDataset(fetch_dataset, cfg, seed=5)
    picks_a = [a.window_indices(i)[1].tolist() for i in range(len(a))]
    assert picks_a == [b.window_indices(i)[1].tolist() for i in range(len(b))]
    b.set_epoch(1)
    assert picks_a != [b.window_indices(i)[1].tolist() for i in range(len(b))]
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=4)))
    assert batch["frames"].shape == (4, 3, 5, 3, 64, 64) and batch["frames"].dtype == torch.float32


def test_future_gap(fetch_dataset: Path) -> None:
    """With max_future_gap G the newest memory frame is 1..G frames before the future, every gap occurs, the
    future stays contiguous, and G = 1 keeps the adjacent windows of the default (same random memory)."""
    plain = WindowDataset(fetch_dataset, WindowConfig(n_memory=3, n_future=2, memory_mode="random"), seed=3)
    gap1 = WindowDataset(
        fetch_dataset, WindowConfig(n_memory=3, n_future=2, memory_mode="random", max_future_gap=1), seed=3
    )
    gapped = WindowDataset(
        fetch_dataset, WindowConfig(n_memory=3, n_future=2, memory_mode="random", max_future_gap=4), seed=3
    )
    gaps = []
    for item in range(len(gapped)):
        assert gap1.window_indices(item)[1].tolist() == plain.window_indices(item)[1].tolist()
        _, idx, n_memory = gapped.window_indices(item)
        memory, future = idx[:n_memory], idx[n_memory:]
        assert future.tolist() == list(range(future[0], future[0] + 2)) and (np.diff(memory) >= 0).all()
        gap = int(future[0] - memory[-1])
        assert 1 <= gap <= min(4, future[0])
        gaps.append(gap)
    assert set(gaps) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="max_future_gap"):
        WindowConfig(max_future_gap=0)
    with pytest.raises(ValueError, match="needs memory"):
        WindowConfig(n_memory=0, max_future_gap=2)


def test_window_arguments(fetch_dataset: Path, atari_dataset: Path) -> None:
    with pytest.raises(ValueError, match="unknown cameras"):
        WindowDataset(fetch_dataset, cameras=["top"])
    with pytest.raises(ValueError, match="no window"):
        WindowDataset(fetch_dataset, WindowConfig(n_memory=4, n_future=40))
    with pytest.raises(IndexError):
        WindowDataset(fetch_dataset, episodes=[7])
    with pytest.raises(ValueError, match="memory_mode"):
        WindowConfig(memory_mode="recent")  # type: ignore[arg-type]
    clip = WindowDataset(atari_dataset, WindowConfig(n_memory=0, n_future=16, normalize=False), episodes=[1])
    item = clip[0]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (1, 16, 3, 64, 64)
    assert "extrinsics" not in item and item["actions"].shape == (16, 1)
