"""The real simulator beside a world model: the same start, the same actions, to watch the world drift.

A GE-Sim world starts from a real recorded first frame; the start-state bank keeps the real simulator's reset
seed of that frame's episode (:attr:`genie_env.start_states.StartStates.seeds`), so :class:`RealTwin` can put the
real simulator (rendered by the same recorder, with the same cameras and resolution) in exactly that state and
then apply every action the world gets. Played side by side (``genie-env play ... --real``), the two rows show
where the world model's pictures and its end-effector kinematics part from reality.

Genie worlds act in latent actions, which the real game does not take, so they have no twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.core import WorldCore
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
        tip_gap_m: Distance between the world's tip (integrated from the actions) and the real tip (metres).
        success: The real simulator's ``is_success``.
    """

    views: np.ndarray
    psnr_db: float
    tip_gap_m: float
    success: bool


class RealTwin:
    """Steps the real simulator of a GE-Sim core's recording in lockstep with the core's env 0.

    Args:
        core: A :class:`~envs.gesim_world.GeSimCore` whose bank holds reset seeds and starts at episode beginnings.

    Raises:
        ValueError: For a Genie core, or a bank that cannot be reproduced (no env id, no seeds, mid-episode starts).
    """

    def __init__(self, core: WorldCore) -> None:
        if not isinstance(core, GeSimCore):
            raise ValueError(
                f"a real twin needs a GE-Sim world; {type(core).__name__} acts in latent actions, "
                "which the real simulator does not take"
            )
        bank = core.bank
        env_id = str(bank.meta.get("env_id", ""))
        if not env_id or not bank.seeds:
            raise ValueError(
                "the world's start states do not name the real simulator and its reset seeds; rebuild them with "
                "genie_env.start_states.build_start_states from a genie-env collect recording"
            )
        if any(first != 0 for _, first in bank.sources):
            raise ValueError("a real twin needs starts at episode beginnings (build_start_states offsets='start')")
        self.core = core
        self.env_id = env_id
        self.size = int(core.current.shape[-1])
        self.source: RealSource = make_source(env_id, size=self.size)
        missing = [c for c in core.cameras if c not in self.source.camera_names]
        if missing:
            self.source.close()
            raise ValueError(f"the real {env_id} has no cameras {missing} (it has {self.source.camera_names})")

    def reset(self, start: int) -> TwinStep:
        """Resets the real simulator into bank start ``start`` (the ``info["start"]`` of the world's reset)."""
        return self._compare(self.source.reset(self.core.bank.seeds[start]), success=False)

    def step(self, action: np.ndarray) -> TwinStep:
        """Applies the world's action (``(4,)`` in [-1, 1]) to the real simulator."""
        result = self.source.step(np.asarray(action, np.float32))
        return self._compare(result.frame, success=bool(result.info.get("is_success", False)))

    def _compare(self, frame: dict[str, np.ndarray], success: bool) -> TwinStep:
        real = np.stack([frame[f"observation.images.{c}"] for c in self.core.cameras])  # (V, H, W, 3)
        world = self.core.frames()[0].detach().cpu()  # (V, 3, H, W) in [-1, 1]
        score = float(psnr(world.float(), frames_to_float(torch.from_numpy(real))).mean())
        tip = self.core.state[0, :3].detach().cpu().numpy()
        gap = float(np.linalg.norm(tip - frame["observation.state"][:3]))
        views = viz.tile_views([view[None] for view in real])[0]
        return TwinStep(views, score, gap, success)

    def close(self) -> None:
        """Closes the real simulator."""
        self.source.close()
