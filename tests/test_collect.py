"""Recording real simulators: layout, row alignment, atomic episodes, exact resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genie_env.data import lerobot
from genie_env.data.collect import collect, record_episode
from genie_env.data.lerobot import DatasetError, LeRobotDataset
from genie_env.data.policies import make_policy
from genie_env.data.sources import make_source
from genie_env.data.sources.fetch import FETCH_ACTION_SCALE


def test_fetch_layout_and_meta(fetch_dataset: Path) -> None:
    root = fetch_dataset
    for name in ("info.json", "episodes.jsonl", "tasks.jsonl", "episodes_stats.jsonl"):
        assert (root / "meta" / name).is_file()
    for i in range(3):
        assert (root / f"data/chunk-000/episode_{i:06d}.parquet").is_file()
        for cam in ("front", "side", "hand"):
            assert (root / f"videos/chunk-000/observation.images.{cam}/episode_{i:06d}.mp4").is_file()
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1"
    assert info["total_episodes"] == 3 and info["total_videos"] == 9 and info["fps"] == 25.0
    cams = {k: v for k, v in info["features"].items() if v["dtype"] == "video"}
    assert sorted(cams) == [f"observation.images.{c}" for c in ("front", "hand", "side")]
    for feature in cams.values():
        k = np.array(feature["info"]["camera.intrinsics"])
        assert k.shape == (3, 3) and k[0, 0] > 0 and k[2, 2] == 1
        assert feature["info"]["camera.convention"] == "opencv"
    assert info["features"]["observation.cameras.hand.extrinsics"]["shape"] == [4, 4]
    stats = [json.loads(line) for line in (root / "meta" / "episodes_stats.jsonl").read_text().splitlines()]
    assert [s["episode_index"] for s in stats] == [0, 1, 2]
    assert stats[0]["stats"]["observation.images.front"]["mean"][0][0][0] > 0


def test_fetch_rows_are_aligned_with_the_simulator(fetch_dataset: Path) -> None:
    ds = LeRobotDataset(fetch_dataset)
    ep = ds.load_episode(0)
    n = len(ep["action"])
    assert n == 13  # 12 actions -> 13 frames
    assert not ep["action"][-1].any(), "the last frame has no action"
    assert ep["truncated"][-1, 0] and not ep["truncated"][:-1].any()
    assert ep["reward"][0, 0] == 0.0
    # The tip motion from frame t to t+1 follows the action recorded at row t, not its neighbours.
    tip = np.concatenate([ds.load_episode(i)["observation.state"][:, :3] for i in range(3)])
    act = np.concatenate([ds.load_episode(i)["action"][:, :3] for i in range(3)])
    ends = np.cumsum([ds.episode_length(i) for i in range(3)]) - 1
    valid = np.setdiff1d(np.arange(len(tip) - 1), ends)
    delta = tip[valid + 1] - tip[valid]

    def err(shift: int) -> float:
        idx = np.clip(valid + shift, 0, len(act) - 1)
        return float(np.abs(delta - FETCH_ACTION_SCALE * act[idx]).mean())

    assert err(0) < err(-1) and err(0) < err(1)
    # Hand camera moves with the gripper, fixed cameras do not.
    ext = ep["observation.cameras.hand.extrinsics"]
    assert np.abs(np.diff(ext[:, :3, 3], axis=0)).max() > 1e-3
    assert np.allclose(ep["observation.cameras.front.extrinsics"], ep["observation.cameras.front.extrinsics"][0])
    # Hand camera follows the tip: their offset is constant.
    offset = ext[:, :3, 3] - ep["observation.state"][:, :3]
    assert np.abs(offset - offset[0]).max() < 1e-4
    for e in ext:  # rotations are proper
        assert np.allclose(e[:3, :3] @ e[:3, :3].T, np.eye(3), atol=1e-5) and np.linalg.det(e[:3, :3]) > 0


def test_atari_layout(atari_dataset: Path) -> None:
    ds = LeRobotDataset(atari_dataset)
    assert ds.camera_names == ["screen"]
    ep = ds.load_episode(1)
    assert ep["observation.images.screen"].shape == (31, 64, 64, 3)
    assert ep["action"].dtype == np.int64 and ep["action"].max() < 18
    assert ep["lives"].shape == (31, 1)
    assert "action_meanings" in ds.info["genie_env"]
    frames = ep["observation.images.screen"].astype(int)
    assert np.abs(np.diff(frames, axis=0)).sum() > 0, "the screen changes"


def test_collection_is_deterministic_and_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = tmp_path / "full"
    collect("ALE/Boxing-v5", 3, full, seed=3, max_steps=8, progress=False)

    # Crash while writing episode 1's video: episode 0 stays readable, nothing half-written is in place.
    part = tmp_path / "part"
    calls = {"n": 0}
    real_write = lerobot.write_video

    def failing_write(path, frames, fps, lossless=True):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_write(path, frames, fps, lossless)

    monkeypatch.setattr(lerobot, "write_video", failing_write)
    with pytest.raises(KeyboardInterrupt):
        collect("ALE/Boxing-v5", 3, part, seed=3, max_steps=8, progress=False)
    monkeypatch.setattr(lerobot, "write_video", real_write)
    ds = LeRobotDataset(part)
    assert ds.num_episodes == 1
    ds.load_episode(0)
    assert not (part / "data/chunk-000/episode_000001.parquet").exists()
    assert not list(part.glob(".staging-*"))

    with pytest.raises(FileExistsError, match="--overwrite or --resume"):
        collect("ALE/Boxing-v5", 3, part, seed=3, max_steps=8, progress=False)
    with pytest.raises(ValueError, match="collected with"):
        collect("ALE/Boxing-v5", 3, part, seed=4, max_steps=8, progress=False, resume=True)
    collect("ALE/Boxing-v5", 3, part, seed=3, max_steps=8, progress=False, resume=True)

    a, b = LeRobotDataset(full), LeRobotDataset(part)
    assert b.num_episodes == 3 and json.loads((part / "meta/info.json").read_text())["total_episodes"] == 3
    for i in range(3):
        ea, eb = a.load_episode(i), b.load_episode(i)
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {i} {key}")


def test_overwrite_rules(tmp_path: Path) -> None:
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a genie-env dataset"):
        collect("ALE/Boxing-v5", 1, stranger, max_steps=3, progress=False, overwrite=True)
    assert (stranger / "todo.txt").read_text() == "mine"
    out = tmp_path / "d"
    collect("ALE/Boxing-v5", 2, out, max_steps=3, progress=False)
    collect("ALE/Boxing-v5", 1, out, max_steps=3, progress=False, overwrite=True)
    assert LeRobotDataset(out).num_episodes == 1


def test_unknown_env_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"FetchPush-v4.*ALE/Boxing-v5"):
        collect("CartPole-v1", 1, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad", [{"episodes": 0}, {"size": 7}, {"policy": "greedy"}, {"max_steps": 0}])
def test_bad_arguments(tmp_path: Path, bad: dict) -> None:
    kwargs = {"episodes": 1, "size": 64, "policy": "mixed", "max_steps": 3} | bad
    with pytest.raises(ValueError):
        collect("ALE/Boxing-v5", kwargs.pop("episodes"), tmp_path / "x", progress=False, **kwargs)


def test_corrupt_and_missing_files_are_named(tmp_path: Path, atari_dataset: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(atari_dataset, root)
    ds = LeRobotDataset(root)
    video = ds.video_path(0, "observation.images.screen")
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    with pytest.raises(DatasetError, match=str(video)):
        ds.load_episode(0)
    parquet = ds.data_path(1)
    parquet.write_bytes(parquet.read_bytes()[:100])
    with pytest.raises(DatasetError, match=str(parquet)):
        ds.load_episode(1)
    parquet.unlink()
    with pytest.raises(DatasetError, match="missing.*" + str(parquet)):
        ds.load_episode(1)
    (root / "meta" / "episodes.jsonl").unlink()
    with pytest.raises(DatasetError, match="episodes.jsonl"):
        LeRobotDataset(root)
    with pytest.raises(DatasetError, match="info.json"):
        LeRobotDataset(tmp_path)


def test_source_rejects_bad_actions() -> None:
    with make_source("FetchReach-v4", 32) as src:
        src.reset(0)
        for bad in (np.zeros(3), np.array([np.nan, 0, 0, 0])):
            with pytest.raises(ValueError, match="Fetch action"):
                src.step(bad)
    with make_source("ALE/Boxing-v5", 32) as src:
        src.reset(0)
        with pytest.raises(ValueError, match="out of range"):
            src.step(np.array([99]))
    with pytest.raises(RuntimeError, match="closed"):
        src.reset(0)


def test_scripted_policy_reaches_the_goal() -> None:
    with make_source("FetchReach-v4", 32) as src:
        policy = make_policy("scripted", "FetchReach-v4", src.action_space)
        successes = sum(record_episode(src, policy, seed=0, index=i)[1] for i in range(3))
    assert successes >= 2
