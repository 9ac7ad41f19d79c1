"""Start-state banks: what they keep of the recording, and their file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genie_env.data.lerobot import LeRobotDataset
from genie_env.start_states import StartStates, build_start_states


def test_bank_keeps_seeds_and_lead_ins_and_round_trips(atari_dataset: Path, tmp_path: Path) -> None:
    """Each start keeps its episode's reset seed and the recorded actions from the first frame to its last prompt
    frame; save/load and select keep them."""
    data = LeRobotDataset(atari_dataset)
    bank = build_start_states(data, prompt_frames=3, per_episode=2, offsets="random", seed=1)
    assert len(bank) == 2 * data.num_episodes and len(bank.seeds) == len(bank.lead_in) == len(bank)
    for (episode, first), lead_in in zip(bank.sources, bank.lead_in, strict=True):
        actions = data.load_episode(episode)["action"]
        assert len(lead_in) == first + 2
        np.testing.assert_array_equal(np.asarray(lead_in).reshape(-1, 1), actions[: first + 2])
    loaded = StartStates.load(bank.save(tmp_path / "bank.safetensors"))
    assert torch.equal(loaded.frames, bank.frames)
    assert (loaded.sources, loaded.seeds, loaded.lead_in) == (bank.sources, bank.seeds, bank.lead_in)
    picked = loaded.select([1])
    assert picked.lead_in == [bank.lead_in[1]] and picked.seeds == [bank.seeds[1]]
    with pytest.raises(ValueError, match="lead-ins"):
        StartStates(bank.frames, bank.cameras, lead_in=[[]])
