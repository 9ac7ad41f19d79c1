"""The real simulator beside a world model: the same start, the same actions, to watch the world drift.

A world starts from real recorded frames; the start-state bank keeps the real simulator's reset seed of each
start's episode (:attr:`genie_env.start_states.StartStates.seeds`) and the recorded actions that lead from that
episode's first frame to the start (:attr:`~genie_env.start_states.StartStates.lead_in`). :class:`RealTwin` resets
the real simulator (rendered by the same recorder, with the same cameras and resolution) with that seed, replays
the lead-in, and so stands in exactly the start's state; then it applies every action the world gets. Played side
by side (``genie-env play ... --real``), the two rows show where the world model's pictures part from reality.

* **GE-Sim** worlds act in end-effector actions, which the real Fetch takes as they are; the twin also reports the
  gap between the world's tip (integrated from the actions) and the real one, and the real success flag.
* **Genie** worlds act in *latent* actions. The real game gets the real action the player chose (arrow keys and
  space, through the bundle's ``latent_mapping.json``), or, for a latent action chosen directly (number keys, a
  policy), the first real action in the game's own order that the mapping assigns to it (``NOOP`` if none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.core import WorldCore
from envs.genie_world import GenieCore
from envs.gesim_world import GeSimCore
from genie_env import viz
from genie_env.data.sources import RealSource, make_source
from genie_env.eval.metrics import psnr
from genie_env.start_states import frames_to_float


@dataclass
class TwinStep:
    """The twin after a reset or a step.

    Attributes:
        views: The real cameras side by side, ``uint8 (H, V*W + gaps, 3)`` (as :func:`envs.render.tile_views`).
        psnr_db: Mean PSNR of the world's views against the real ones (dB).
        tip_gap_m: Distance between the world's tip (integrated from the actions) and the real tip (metres);
            ``None`` for a world without a robot (Genie).
        success: The real simulator's ``is_success`` (``False`` where it reports none).
        reward: The real reward of the step (0 after a reset).
        action: The real action applied, in words (``"UP"``, ``"dx +1.00 ..."``; ``""`` after a reset).
    """

    views: np.ndarray
    psnr_db: float
    tip_gap_m: float | None
    success: bool
    reward: float = 0.0
    action: str = ""


class RealTwin:
    """Steps the real simulator of a world's recording in lockstep with the core's env 0.

    Args:
        core: A GE-Sim or Genie core whose start bank names the real env and holds reset seeds (and lead-ins for
            starts after an episode's first frame).
        latent_mapping: Genie: the bundle's real-action-name -> latent id mapping (``latent_mapping.json``).

    Raises:
        ValueError: For a bank that cannot be reproduced (no env id, no seeds, mid-episode starts without
            lead-ins), a Genie world without a latent mapping, or a real env without the world's cameras.
    """

    def __init__(self, core: WorldCore, latent_mapping: dict[str, int] | None = None) -> None:
        if not isinstance(core, (GeSimCore, GenieCore)):
            raise ValueError(f"no real twin for a {type(core).__name__}")
        bank = core.bank
        env_id = str(bank.meta.get("env_id", ""))
        if not env_id or not bank.seeds:
            raise ValueError(
                "the world's start states do not name the real simulator and its reset seeds; rebuild them with "
                "genie_env.start_states.build_start_states from a genie-env collect recording"
            )
        if not bank.lead_in and any(first + bank.prompt_frames > 1 for _, first in bank.sources):
            raise ValueError(
                "the world's starts lie after their episodes' first frames, and the bank holds no lead-in actions "
                "to reach them; rebuild it with genie_env.start_states.build_start_states"
            )
        self.genie = isinstance(core, GenieCore)
        if self.genie and latent_mapping is None:
            raise ValueError(
                "a Genie world's real twin needs the bundle's latent mapping (latent_mapping.json; write it with "
                "genie-env latent-mapping BUNDLE --data DATASET --out map.json --play-out BUNDLE)"
            )
        self.core = core
        self.env_id = env_id
        self.size = int(core.frames().shape[-1])
        self.source: RealSource = make_source(env_id, size=self.size)
        self.cameras = list(bank.cameras)
        missing = [c for c in self.cameras if c not in self.source.camera_names]
        if missing:
            self.source.close()
            raise ValueError(f"the real {env_id} has no cameras {missing} (it has {self.source.camera_names})")
        self.meanings: list[str] = list(self.source.metadata().get("action_meanings", []))
        self.latent_to_real: dict[int, int] = {}
        for index, name in reversed(list(enumerate(self.meanings))):  # the first real action in game order wins
            if latent_mapping and name in latent_mapping:
                self.latent_to_real[int(latent_mapping[name])] = index

    def reset(self, start: int) -> TwinStep:
        """Puts the real simulator into bank start ``start`` (the ``info["start"]`` of the world's reset): the
        episode's reset seed, then the recorded lead-in actions."""
        bank = self.core.bank
        frame = self.source.reset(bank.seeds[start])
        for action in bank.lead_in[start] if bank.lead_in else []:
            frame = self.source.step(self._real_array(action)).frame
        return self._compare(frame, success=False)

    def step(self, action: Any, real_action: str | None = None) -> TwinStep:
        """Applies the world's action to the real simulator.

        Args:
            action: GE-Sim: ``(4,)`` in [-1, 1], applied as it is. Genie: the latent action id.
            real_action: Genie: the real action the player chose (e.g. ``"UP"``), applied instead of the latent
                action's mapped one.
        """
        if self.genie:
            if real_action is not None and real_action in self.meanings:
                index = self.meanings.index(real_action)
            else:
                index = self.latent_to_real.get(int(np.asarray(action).reshape(-1)[0]), 0)
            result = self.source.step(self._real_array([index]))
            label = self.meanings[index] if self.meanings else str(index)
        else:
            result = self.source.step(np.asarray(action, np.float32))
            label = "same as the world"
        step = self._compare(result.frame, success=bool(result.info.get("is_success", False)))
        step.reward, step.action = float(result.reward), label
        return step

    def _real_array(self, action: Any) -> np.ndarray:
        space = self.source.action_space
        return np.asarray(action, dtype=space.dtype).reshape(space.shape if space.shape else (1,))

    def _compare(self, frame: dict[str, np.ndarray], success: bool) -> TwinStep:
        real = np.stack([frame[f"observation.images.{c}"] for c in self.cameras])  # (V, H, W, 3)
        world = self.core.frames()[0].detach().cpu()  # (V, 3, H, W) in [-1, 1]
        score = float(psnr(world.float(), frames_to_float(torch.from_numpy(real))).mean())
        gap = None
        if isinstance(self.core, GeSimCore):
            tip = self.core.state[0, :3].detach().cpu().numpy()
            gap = float(np.linalg.norm(tip - frame["observation.state"][:3]))
        views = viz.tile_views([view[None] for view in real])[0]
        return TwinStep(views, score, gap, success)

    def close(self) -> None:
        """Closes the real simulator."""
        self.source.close()
