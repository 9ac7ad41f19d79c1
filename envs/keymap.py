"""Key bindings of ``genie-env play``, as data: which key does what, for each kind of world.

Keys are named as ``pygame.key.name`` names them (``"w"``, ``"space"``, ``"up"``, ``"["``, ``"tab"``,
``"escape"``), so bindings, scripted key events (head-less play, tests) and the help text all use one vocabulary,
and this module never imports pygame.

* **Genie** (``Discrete(n)`` latent actions): keys ``1`` .. ``n`` (``n <= 9``) choose latent action ``0`` ..
  ``n - 1``. The choice is *sticky*: the world keeps receiving it until another is chosen, since no latent action
  is known to mean "do nothing". Arrow keys and space choose the latent action that a shipped mapping
  (``latent_mapping.json`` in the bundle: ``{"UP": 3, "FIRE": 5, ...}``, real action name -> latent id) assigns
  to the real action they stand for; without a mapping they do nothing, and the HUD says so.
* **GE-Sim** (``Box(-1, 1, (4,))`` end-effector actions): ``W``/``S`` move the tip along +x/-x, ``A``/``D`` along
  +y/-y, ``Q``/``E`` along +z/-z (action components +-1 while the key is down); ``space`` toggles the gripper
  command (``action[3]``: +1 open, -1 close); ``T`` toggles the trajectory-map overlay.
* **Common**: ``P`` pause, ``N`` one step while paused, ``R`` reset with a new seed, ``[`` / ``]`` fewer / more
  sampler steps (MaskGIT steps for Genie, denoising steps for GE-Sim), ``tab`` hands control to the ``--policy``
  and back, ``escape`` quits (closing the window too).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

LATENT_MAPPING_FILE = "latent_mapping.json"
"""A bundle's optional latent-to-real action mapping: ``{"real_action_name": latent_id}``."""

WorldKind = Literal["genie", "gesim"]

Command = Literal[
    "latent",  # Genie: choose latent action ``value``
    "real",  # Genie: choose the latent action the mapping gives real action ``value``
    "move",  # GE-Sim: end-effector motion ``value`` (a unit vector on x, y or z) while the key is down
    "gripper",  # GE-Sim: toggle the gripper command
    "overlay",  # GE-Sim: toggle the trajectory-map overlay
    "pause",
    "single_step",
    "reset",
    "fewer_steps",
    "more_steps",
    "policy",
    "quit",
]


@dataclass(frozen=True)
class Binding:
    """What one key does.

    Attributes:
        key: The key's ``pygame.key.name``.
        command: What pressing it does.
        value: The command's argument (a latent id, a real action name, or a motion vector), if any.
        help: A short description for the help text.
    """

    key: str
    command: Command
    value: int | str | tuple[float, float, float] | None = None
    help: str = ""


MAX_LATENT_KEYS = 9
"""Keys ``1`` .. ``9``: latent actions beyond the ninth have no key (the HUD says how many there are)."""

ARROW_ACTIONS: dict[str, str] = {"up": "UP", "down": "DOWN", "left": "LEFT", "right": "RIGHT", "space": "FIRE"}
"""Genie: key -> the real action name (Atari's ``get_action_meanings()`` spelling) looked up in the mapping."""

MOVE_KEYS: dict[str, tuple[float, float, float]] = {
    "w": (1.0, 0.0, 0.0),
    "s": (-1.0, 0.0, 0.0),
    "a": (0.0, 1.0, 0.0),
    "d": (0.0, -1.0, 0.0),
    "q": (0.0, 0.0, 1.0),
    "e": (0.0, 0.0, -1.0),
}
"""GE-Sim: key -> end-effector motion (action components ``dx, dy, dz``)."""

COMMON_BINDINGS: tuple[Binding, ...] = (
    Binding("p", "pause", help="pause"),
    Binding("n", "single_step", help="step (paused)"),
    Binding("r", "reset", help="reset (new seed)"),
    Binding("[", "fewer_steps", help="fewer sampler steps"),
    Binding("]", "more_steps", help="more sampler steps"),
    Binding("tab", "policy", help="policy <-> you"),
    Binding("escape", "quit", help="quit"),
)


@dataclass
class Keymap:
    """The bindings of one world: :meth:`genie` or :meth:`gesim` build it.

    Attributes:
        kind: ``"genie"`` or ``"gesim"``.
        bindings: Key name -> binding.
        latent_mapping: Genie: the shipped real-action-name -> latent id mapping, or ``None``.
        num_actions: Genie: the number of latent actions.
    """

    kind: WorldKind
    bindings: dict[str, Binding] = field(default_factory=dict)
    latent_mapping: dict[str, int] | None = None
    num_actions: int = 0

    @classmethod
    def genie(cls, num_actions: int, latent_mapping: dict[str, int] | None = None) -> Keymap:
        """Keys ``1`` .. ``min(n, 9)`` for the latent actions, arrows and space through ``latent_mapping``."""
        if isinstance(num_actions, bool) or not isinstance(num_actions, (int, np.integer)) or num_actions < 1:
            raise ValueError(f"num_actions must be an integer >= 1, got {num_actions!r}")
        bindings = {
            str(i + 1): Binding(str(i + 1), "latent", i, f"latent action {i}")
            for i in range(min(int(num_actions), MAX_LATENT_KEYS))
        }
        for key, real in ARROW_ACTIONS.items():
            bindings[key] = Binding(key, "real", real, f"real action {real}")
        bindings.update({b.key: b for b in COMMON_BINDINGS})
        mapping = None if latent_mapping is None else check_latent_mapping(latent_mapping, int(num_actions))
        return cls("genie", bindings, mapping, int(num_actions))

    @classmethod
    def gesim(cls) -> Keymap:
        """W/S, A/D, Q/E for the tip, space for the gripper, T for the overlay."""
        axes = {"w": "+x", "s": "-x", "a": "+y", "d": "-y", "q": "+z", "e": "-z"}
        bindings = {key: Binding(key, "move", motion, f"tip {axes[key]}") for key, motion in MOVE_KEYS.items()}
        bindings["space"] = Binding("space", "gripper", help="toggle gripper")
        bindings["t"] = Binding("t", "overlay", help="toggle trajectory-map overlay")
        bindings.update({b.key: b for b in COMMON_BINDINGS})
        return cls("gesim", bindings)

    def get(self, key: str) -> Binding | None:
        """The binding of ``key`` (a ``pygame.key.name``), or ``None`` for an unbound key."""
        return self.bindings.get(key.lower())

    def latent_for(self, real_action: str) -> int | None:
        """Genie: the latent id the mapping gives ``real_action``, or ``None`` (no mapping, or not in it)."""
        if self.latent_mapping is None:
            return None
        return self.latent_mapping.get(real_action.upper())

    def motion(self, keys: set[str]) -> np.ndarray:
        """GE-Sim: the ``(dx, dy, dz)`` of the movement keys in ``keys`` (opposite keys cancel), each in [-1, 1]."""
        total = np.zeros(3, np.float32)
        for key in keys:
            binding = self.get(key)
            if binding is not None and binding.command == "move":
                total += np.asarray(binding.value, np.float32)
        return np.clip(total, -1.0, 1.0)

    def help_text(self) -> str:
        """One line of help: the world's keys, then the common ones."""
        if self.kind == "genie":
            n = min(self.num_actions, MAX_LATENT_KEYS)
            parts = [f"1-{n}: latent action" if n > 1 else "1: latent action"]
            if self.num_actions > MAX_LATENT_KEYS:
                parts[0] += f" (of {self.num_actions})"
            if self.latent_mapping is None:
                parts.append("arrows/space: no latent mapping shipped")
            else:
                mapped = [k for k, real in ARROW_ACTIONS.items() if self.latent_for(real) is not None]
                parts.append(f"{'/'.join(mapped) or 'arrows/space'}: mapped actions")
        else:
            parts = ["W/S A/D Q/E: tip x y z", "space: gripper", "T: overlay"]
        parts += ["P pause", "N step", "R reset", "[ ] sampler steps", "TAB policy", "ESC quit"]
        return "  ".join(parts)


def check_latent_mapping(mapping: object, num_actions: int) -> dict[str, int]:
    """A validated mapping with upper-case real action names.

    Raises:
        ValueError: If it is not ``{str: int}`` with ids in ``[0, num_actions)``, naming the offending entry.
    """
    if not isinstance(mapping, dict):
        raise ValueError(f"a latent mapping must be a JSON object {{real_action_name: latent_id}}, got {mapping!r}")
    checked: dict[str, int] = {}
    for name, latent in mapping.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"latent mapping keys must be real action names, got {name!r}")
        if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < num_actions:
            raise ValueError(
                f"latent mapping entry {name!r}: expected a latent action id in [0, {num_actions}), got {latent!r}"
            )
        checked[name.upper()] = latent
    return checked


def load_latent_mapping(bundle: str | os.PathLike[str], num_actions: int) -> dict[str, int] | None:
    """The bundle's ``latent_mapping.json``, validated, or ``None`` if it ships none.

    Raises:
        ValueError: If the file is not valid JSON or not a valid mapping (naming the file).
    """
    path = Path(bundle) / LATENT_MAPPING_FILE
    if not path.is_file():
        return None
    try:
        return check_latent_mapping(json.loads(path.read_text()), num_actions)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"invalid latent mapping {path}: {exc}") from exc
