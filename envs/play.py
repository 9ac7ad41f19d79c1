"""``genie-env play``: play any world env with the keyboard, watch every camera and the model's numbers, record.

One loop serves every world and both ways of running it:

* **with a display**, a pygame window (the :class:`~envs.render.HumanWindow` that ``render_mode="human"`` uses)
  shows all camera views side by side, upscaled ``size`` times, above a HUD: env id, step, episode, seed, the
  loop's frames per second and the model's latency (``info["timing"].model_s``), reward and return, the last
  action, the memory window and the sampler steps; keys (:mod:`envs.keymap`) choose actions and control the loop;
* **head-less** (``SDL_VIDEODRIVER=dummy``, no display, or ``headless=True``), the same loop runs for ``steps``
  iterations with scripted key events (``[(iteration, key), ...]``), the ``--policy``, or random actions, and
  records; this is how it is tested.

Each loop iteration handles that iteration's key events, then either resets (``R``, or after an episode ended),
steps the world once (unless paused; ``N`` steps once while paused), or does nothing (paused), and draws. A frame
is *shown* (and recorded) whenever the world produced one: after every reset and every step, so a recording holds
``1 + steps + resets`` frames.

With ``real=True``, the real simulator the world was learned from runs beside it
(:class:`~envs.real_twin.RealTwin`): reset into the same recorded start and given the same actions (for Genie, the
real action the player chose, or the real action the shipped latent mapping gives a latent one), its cameras are
drawn in a second row under the world's, and the HUD shows the PSNR between the two rows, and the distance between
the world's tip and the real one and the real success flag (Fetch), or the real action and return (Atari): the
clearest way to see the world drift.

Recording: ``record`` writes an mp4 of exactly what the window shows (HUD included), streamed to a temporary
file and renamed into place when play ends, however it ends. ``record_dataset`` writes the world's frames,
actions and rewards as a dataset in our LeRobot layout (:mod:`genie_env.data.lerobot`), one episode per played
episode, committed when it ends (an episode cut by ``R`` or by quitting ends with ``truncated`` set), so human
play becomes training data: Genie episodes hold ``observation.images.screen`` and the latent ``action``; GE-Sim
episodes hold every camera (with intrinsics), the camera extrinsics, the tip ``observation.state``, the goal and the
end-effector ``action``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import genie_env  # noqa: F401 (registers the env ids)
from envs.core import WorldCore
from envs.genie_world import GenieCore
from envs.gesim_world import GeSimCore
from envs.keymap import MOVE_KEYS, Keymap, WorldKind, load_latent_mapping
from envs.loading import resolve_world
from envs.real_twin import RealTwin, TwinStep
from envs.render import HumanWindow, tile_views
from genie_env import viz
from genie_env.data.features import Feature
from genie_env.data.lerobot import LeRobotWriter
from genie_env.data.video import PREVIEW
from genie_env.geometry import DEFAULT_BACKGROUND
from genie_env.models.gesim.conditioning import conditioning_maps
from genie_env.registration import NAMESPACE

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame is imported later, on first use

MAX_SAMPLER_STEPS = 100
"""The most sampler steps ``]`` goes up to."""

OVERLAY_ALPHA = 0.65
"""Weight of the trajectory map where it draws something (the tip's disc and axes)."""

HUD_MIN_WIDTH = 560
"""The canvas is at least this wide so that the HUD text fits beside a single 64x64 view."""

PANEL, TEXT, DIM, ACCENT = (24, 24, 28), (235, 235, 235), (150, 150, 160), (255, 200, 80)


@dataclass
class PlayResult:
    """What a play session did.

    Attributes:
        frames: Frames shown (and recorded): one after every reset and every step.
        steps: World steps taken.
        iterations: Loop iterations run.
        episodes: Episodes played (started).
        returns: The return of every episode, the unfinished last one included.
        seeds: The reset seed of every episode.
        video: The mp4 written, or ``None``.
        dataset: The dataset written, or ``None``.
        last_obs: The last observation.
        last_info: The last step's (or reset's) ``info``.
        canvas_shape: ``(H, W, 3)`` of the frames shown.
        twin: With ``real=True``, the real twin after every reset and step (PSNR, tip gap, success).
    """

    frames: int = 0
    steps: int = 0
    iterations: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    video: Path | None = None
    dataset: Path | None = None
    last_obs: Any = None
    last_info: dict[str, Any] = field(default_factory=dict)
    canvas_shape: tuple[int, int, int] = (0, 0, 3)
    twin: list[TwinStep] = field(default_factory=list)


# -- helpers ----------------------------------------------------------------------------------------------------


def is_headless() -> bool:
    """True without a display: the SDL dummy driver, or Linux without ``DISPLAY``/``WAYLAND_DISPLAY``."""
    if os.environ.get("SDL_VIDEODRIVER", "") in ("dummy", "offscreen"):
        return True
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def full_env_id(env_id: str) -> str:
    """``"Genie-Boxing-v0"`` -> ``"genie_env/Genie-Boxing-v0"`` where only the namespaced id is registered."""
    if env_id not in gym.registry and f"{NAMESPACE}/{env_id}" in gym.registry:
        return f"{NAMESPACE}/{env_id}"
    return env_id


def parse_scripted_keys(text: str) -> list[tuple[int, str]]:
    """``"0:w,1:w,3:p"`` -> ``[(0, "w"), (1, "w"), (3, "p")]`` (iteration:key pairs, key names as pygame's).

    Raises:
        ValueError: For an entry that is not ``ITERATION:KEY`` with an integer iteration >= 0.
    """
    events = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        tick, sep, key = part.partition(":")
        if not sep or not tick.strip().isdigit() or not key:
            raise ValueError(f"scripted key events are ITERATION:KEY, e.g. '0:w,3:p,5:space', got {part!r}")
        events.append((int(tick), key.strip()))
    return events


def load_policy(path: str | os.PathLike[str]) -> Any:
    """A stable-baselines3 model saved with ``model.save(path)`` (PPO, A2C, DQN, SAC, TD3 or DDPG).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If no SB3 algorithm can load it.
    """
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy at {path}: expected a .zip saved by a stable-baselines3 model.save()")
    errors = []
    for algo in (PPO, A2C, DQN, SAC, TD3, DDPG):
        try:
            return algo.load(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 (each algorithm fails its own way on another's file)
            errors.append(f"{algo.__name__}: {type(exc).__name__}: {exc}")
    raise ValueError(f"cannot load {path} as a stable-baselines3 model:\n  " + "\n  ".join(errors))


def _world_kind(core: WorldCore) -> WorldKind:
    if isinstance(core, GenieCore):
        return "genie"
    if isinstance(core, GeSimCore):
        return "gesim"
    raise TypeError(f"play knows Genie and GE-Sim cores, got {type(core).__name__}")


def sampler_steps(core: WorldCore) -> int:
    """The sampler steps per frame: MaskGIT steps (Genie) or denoising steps (GE-Sim)."""
    return int(core.maskgit_steps) if isinstance(core, GenieCore) else int(core.steps_per_frame)  # type: ignore[attr-defined]


def set_sampler_steps(core: WorldCore, steps: int) -> int:
    """Changes the sampler steps live (clamped to ``[1, MAX_SAMPLER_STEPS]``); returns the new value."""
    steps = int(min(max(steps, 1), MAX_SAMPLER_STEPS))
    if isinstance(core, GenieCore):
        core.maskgit_steps = steps
        core.sampler.steps = steps
    elif isinstance(core, GeSimCore):
        core.steps_per_frame = steps
    return steps


def _bundle_root(env: gym.Env) -> Path | None:
    checkpoint = (env.spec.kwargs if env.spec is not None else {}).get("checkpoint")
    if checkpoint is None:
        return None
    try:
        return resolve_world(checkpoint)
    except Exception:  # noqa: BLE001 (the env was built from it, so this does not happen in practice)
        return None


def overlay_trajectory_maps(core: GeSimCore, frames: torch.Tensor) -> torch.Tensor:
    """GE-Sim views ``(V, 3, H, W)`` in [-1, 1] with the current trajectory map blended where it draws."""
    height, width = frames.shape[-2:]
    cameras = core._cameras(core.state)[0][:, None]  # (V, 1, 4, 4)
    traj, _ = conditioning_maps(
        core.state[:1].float(),
        cameras,
        core.intrinsics[0],
        height,
        width,
        float(core.world.max_opening),
        float(core.world.disc_radius_m),
    )
    maps = traj[:, 0].to(frames.device)  # (V, 3, H, W) in [0, 1]
    drawn = (maps - DEFAULT_BACKGROUND).abs().amax(dim=1, keepdim=True) > 0.02
    return torch.where(drawn, (1 - OVERLAY_ALPHA) * frames + OVERLAY_ALPHA * (maps * 2 - 1), frames)


def _scalar(value: Any) -> Any:
    array = np.asarray(value)
    return array.item() if array.size == 1 else array


# -- drawing ----------------------------------------------------------------------------------------------------


class PlayCanvas:
    """Draws the views (upscaled ``size`` times) above a HUD into one ``uint8 (H, W, 3)`` image.

    The canvas has a fixed size for a session (so that a recording's frames all match), even in both dimensions
    (so that it encodes as ``yuv420p``).

    Args:
        views_shape: ``(H, W)`` of the views tiled side by side (before upscaling).
        size: Integer upscale of the views.
        help_text: The key help, wrapped below the status lines.
    """

    STATUS_LINES = 6

    def __init__(self, views_shape: tuple[int, int], size: int, help_text: str) -> None:
        import pygame  # deferred: pygame loads SDL

        pygame.font.init()
        self._pygame = pygame
        self.size = size
        self.font = pygame.font.Font(None, 20)
        self.line = self.font.get_linesize() + 2
        views_h, views_w = views_shape[0] * size, views_shape[1] * size
        width = max(views_w, HUD_MIN_WIDTH)
        self.help = self._wrap(help_text, width - 16)
        height = views_h + 8 + self.line * (self.STATUS_LINES + len(self.help)) + 8
        self.width, self.height = width + width % 2, height + height % 2
        self.views_at = ((self.width - views_w) // 2, 0)
        self.hud_at = views_h + 8

    def _wrap(self, text: str, width: int) -> list[str]:
        lines, current = [], ""
        for word in text.split("  "):
            candidate = f"{current}  {word}" if current else word
            if current and self.font.size(candidate)[0] > width:
                lines.append(current)
                current = word
            else:
                current = candidate
        return [*lines, current] if current else lines

    def draw(self, views: np.ndarray, status: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
        """The canvas for tiled ``views`` (``uint8 (h, w, 3)``) and ``status`` lines (text, colour)."""
        pygame = self._pygame
        surface = pygame.Surface((self.width, self.height))
        surface.fill(PANEL)
        big = views.repeat(self.size, axis=0).repeat(self.size, axis=1)
        surface.blit(pygame.surfarray.make_surface(np.ascontiguousarray(big.swapaxes(0, 1))), self.views_at)
        y = self.hud_at
        lines = [*status[: self.STATUS_LINES], *[("", TEXT)] * (self.STATUS_LINES - len(status))]
        for text, colour in [*lines, *((line, DIM) for line in self.help)]:
            if text:
                surface.blit(self.font.render(text, True, colour), (8, y))
            y += self.line
        return np.ascontiguousarray(pygame.surfarray.array3d(surface).swapaxes(0, 1))


# -- recorders --------------------------------------------------------------------------------------------------


class VideoRecorder:
    """Streams frames into an mp4 (H.264 ``yuv420p``, like :func:`genie_env.viz.save_preview_video`).

    Frames go to a temporary file next to ``path``, renamed into place by :meth:`close`: a reader never sees a
    half-written file at ``path``, and a session that ends by an error or Ctrl-C still leaves what was played.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"record must be an .mp4 path, got {str(path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".mp4")
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames = 0
        self._writer: Any = None

    def add(self, frame: np.ndarray) -> None:
        """Appends ``uint8 (H, W, 3)`` (even sizes; the same for every frame)."""
        if self._writer is None:
            import imageio_ffmpeg

            height, width = frame.shape[:2]
            self._writer = imageio_ffmpeg.write_frames(
                str(self.tmp),
                (width, height),
                fps=self.fps,
                codec="libx264",
                output_params=["-f", "mp4", *PREVIEW],
                macro_block_size=1,
                ffmpeg_log_level="error",
            )
            self._writer.send(None)
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finishes the file and moves it into place; ``None`` (and no file) if no frame was added."""
        if self._writer is None:
            self.tmp.unlink(missing_ok=True)
            return None
        self._writer.close()
        self._writer = None
        os.replace(self.tmp, self.path)
        return self.path


class DatasetRecorder:
    """Collects played episodes and commits each to a LeRobot-layout dataset when it ends.

    Row convention as :mod:`genie_env.data.lerobot`: row ``t`` holds the observation at frame ``t``, the action
    taken there and the reward / flags that arrived with it; the last row's action is zeros.

    Args:
        root: The dataset directory (must not exist, or be empty).
        core: The env's core (cameras, intrinsics, action space).
        env_id: Recorded in ``meta/info.json``.
    """

    def __init__(self, root: str | os.PathLike[str], core: WorldCore, env_id: str, fps: float) -> None:
        self.root = Path(root)
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise FileExistsError(f"record_dataset directory {self.root} already exists and is not empty")
        self.core, self.env_id, self.fps = core, env_id, float(fps)
        self.kind = _world_kind(core)
        self.writer: LeRobotWriter | None = None
        self.rows: list[dict[str, np.ndarray]] = []
        self.pending: dict[str, np.ndarray] | None = None
        self.task = env_id
        self.seed = 0
        self.committed = 0

    def _features(self) -> dict[str, Feature]:
        core = self.core
        feats: dict[str, Feature] = {}
        if isinstance(core, GeSimCore):
            h, w = core.current.shape[-2:]
            for i, camera in enumerate(core.cameras):
                feats[f"observation.images.{camera}"] = Feature(
                    "video",
                    (h, w, 3),
                    info={
                        "camera.intrinsics": core.intrinsics[0, i].cpu().numpy().round(6).tolist(),
                        "camera.convention": "opencv",
                        "camera.moving": bool(core.attached[i]),
                        "camera.extrinsics_feature": f"observation.cameras.{camera}.extrinsics",
                    },
                )
            for camera in core.cameras:
                feats[f"observation.cameras.{camera}.extrinsics"] = Feature(
                    "float32", (4, 4), info={"frame": "camera-to-base", "convention": "opencv", "units": "m"}
                )
            feats["observation.state"] = Feature(
                "float32", (8,), ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"], {"frame": "base", "units": "m"}
            )
            if core.bank_goal is not None:
                feats["observation.goal"] = Feature("float32", (3,), ["x", "y", "z"], {"frame": "base"})
            feats["action"] = Feature("float32", (4,), ["dx", "dy", "dz", "gripper"])
        else:
            h, w = core.current.shape[-2:]  # type: ignore[attr-defined]
            feats["observation.images.screen"] = Feature("video", (h, w, 3))
            n = int(core.single_action_space.n)  # type: ignore[attr-defined]
            feats["action"] = Feature("int64", (1,), ["latent_action"], {"n": n, "latent": True})
        feats["reward"] = Feature("float32", (1,))
        feats["terminated"] = Feature("bool", (1,))
        feats["truncated"] = Feature("bool", (1,))
        return feats

    def _frame(self, obs: Any) -> dict[str, np.ndarray]:
        core = self.core
        if isinstance(core, GeSimCore):
            row = {f"observation.images.{camera}": np.asarray(obs[camera]) for camera in core.cameras}
            extrinsics = core._cameras(core.state)[0].cpu().numpy().astype(np.float32)
            for i, camera in enumerate(core.cameras):
                row[f"observation.cameras.{camera}.extrinsics"] = extrinsics[i]
            row["observation.state"] = np.asarray(obs["state"], np.float32)
            if "goal" in obs:
                row["observation.goal"] = np.asarray(obs["goal"], np.float32)
            return row
        return {"observation.images.screen": np.asarray(obs)}

    def start(self, obs: Any, seed: int, task: str) -> None:
        """A new episode begins at ``obs`` (reset with ``seed``)."""
        if self.writer is None:
            self.writer = LeRobotWriter.create(
                self.root, self._features(), self.fps, {"source": "genie-env play", "env_id": self.env_id}
            )
        self.rows, self.seed, self.task = [], int(seed), task
        self.pending = {**self._frame(obs), **self._outcome(0.0, False, False)}

    @staticmethod
    def _outcome(reward: float, terminated: bool, truncated: bool) -> dict[str, np.ndarray]:
        return {
            "reward": np.array([reward], np.float32),
            "terminated": np.array([terminated]),
            "truncated": np.array([truncated]),
        }

    def step(self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool) -> None:
        """The action taken at the pending frame and what it led to."""
        assert self.pending is not None
        self.pending["action"] = np.asarray(action, self.writer.features["action"].dtype).reshape(  # type: ignore[union-attr]
            self.writer.features["action"].shape  # type: ignore[union-attr]
        )
        self.rows.append(self.pending)
        self.pending = {**self._frame(obs), **self._outcome(reward, terminated, truncated)}

    def end(self, cut: bool, controller: str) -> None:
        """Commits the episode (``cut``: ended by the player, so its last row is marked ``truncated``)."""
        if self.pending is None or self.writer is None:
            return
        last = self.pending
        self.pending = None
        if not self.rows:  # a reset right after a reset: nothing happened
            return
        feature = self.writer.features["action"]
        last["action"] = np.zeros(feature.shape, feature.dtype)
        if cut:
            last["truncated"] = np.array([True])
        rows = [*self.rows, last]
        frames = {key: np.stack([row[key] for row in rows]) for key in self.writer.features}
        extra = {"seed": self.seed, "policy": controller, "env_id": self.env_id}
        self.writer.add_episode(frames, self.task, extra)
        self.committed += 1


# -- the loop ---------------------------------------------------------------------------------------------------


class _Events:
    """Key events of one loop iteration: scripted ones head-less, pygame's with a window."""

    def __init__(self, scripted: Iterable[tuple[int, str]] | None, keymap: Keymap, live: bool) -> None:
        self.by_tick: dict[int, list[str]] = {}
        for entry in scripted or ():
            try:
                tick, key = entry
            except (TypeError, ValueError):
                raise ValueError(f"scripted key events are (iteration, key) pairs, got {entry!r}") from None
            if isinstance(tick, bool) or not isinstance(tick, (int, np.integer)) or tick < 0:
                raise ValueError(f"scripted key event {entry!r}: the iteration must be an integer >= 0")
            if not isinstance(key, str) or keymap.get(key) is None:
                raise ValueError(
                    f"scripted key event {entry!r}: key {key!r} is not bound for this world; "
                    f"bound keys: {sorted(keymap.bindings)}"
                )
            self.by_tick.setdefault(int(tick), []).append(key.lower())
        self.live = live
        if live:
            import pygame

            self._pygame = pygame

    def poll(self, tick: int) -> tuple[list[str], set[str]]:
        """``(pressed, held)``: keys pressed during this iteration, and the movement keys down now."""
        pressed = list(self.by_tick.get(tick, []))
        held: set[str] = set(pressed)
        if self.live:
            pygame = self._pygame
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    pressed.append("escape")
                elif event.type == pygame.KEYDOWN:
                    name = pygame.key.name(event.key).lower()
                    pressed.append(name)
                    held.add(name)
            state = pygame.key.get_pressed()
            held |= {key for key in MOVE_KEYS if state[pygame.key.key_code(key)]}
        return pressed, held


def play(
    env_id: str,
    *,
    seed: int = 0,
    fps: float | None = None,
    record: str | os.PathLike[str] | None = None,
    record_dataset: str | os.PathLike[str] | None = None,
    policy: Any = None,
    steps: int | None = None,
    size: int = 4,
    scripted_keys: Iterable[tuple[int, str]] | None = None,
    headless: bool | None = None,
    env_kwargs: dict[str, Any] | None = None,
    real: bool = False,
) -> PlayResult:
    """Plays a world env (see the module docstring for the loop, the keys and what is recorded).

    Args:
        env_id: A registered id (``"genie_env/Genie-Boxing-v0"``; the ``genie_env/`` prefix may be left out).
        seed: Seed of the first reset; ``R`` and episode ends reset with ``seed + 1``, ``seed + 2``, ...
        fps: Frames per second the window is paced to and the mp4 plays at (default: the env's ``render_fps``).
        record: An ``.mp4`` path: what the window shows.
        record_dataset: A new directory: the played episodes in our LeRobot layout.
        policy: A stable-baselines3 ``.zip`` path, or an object with ``predict(obs, deterministic=True)``; ``TAB``
            hands control to it and back (head-less without scripted keys, it plays from the start).
        steps: Loop iterations to run (``None``: until ``ESC`` or the window closes; required head-less).
        size: Integer upscale of the 64x64 views.
        scripted_keys: ``[(iteration, key), ...]`` key presses (``pygame.key.name`` names), in addition to the
            keyboard. Movement keys count as held for the iteration they are pressed in.
        headless: Run without a window (default: :func:`is_headless`).
        env_kwargs: Keyword arguments for ``gym.make`` (``checkpoint``, ``maskgit_steps``, ``denoise_steps``...).
        real: Run the real simulator beside the world with the same start and actions (worlds whose start states
            carry reset seeds and lead-ins; Genie worlds also need a shipped latent mapping; see
            :class:`~envs.real_twin.RealTwin`).

    Returns:
        A :class:`PlayResult`.

    Raises:
        ValueError: For a bad argument (naming it), e.g. head-less play without ``steps``.
        FileExistsError: If ``record_dataset`` exists and is not empty.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0):
        raise ValueError(f"steps must be None or an integer >= 0, got {steps!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    headless = is_headless() if headless is None else bool(headless)
    if headless and steps is None:
        raise ValueError("head-less play needs steps=N (--steps N): there is no window to close")
    if record is not None and Path(record).suffix.lower() != ".mp4":
        raise ValueError(f"record must be an .mp4 path, got {str(record)!r}")
    if record_dataset is not None:
        root = Path(record_dataset)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(f"record_dataset directory {root} already exists and is not empty")
    if isinstance(policy, (str, os.PathLike)):
        policy = load_policy(policy)
    elif policy is not None and not callable(getattr(policy, "predict", None)):
        raise ValueError(f"policy must be a .zip path or have predict(obs, deterministic=True), got {policy!r}")

    env_id = full_env_id(env_id)
    env = gym.make(env_id, **(env_kwargs or {}))
    result = PlayResult()
    video: VideoRecorder | None = None
    data: DatasetRecorder | None = None
    window: HumanWindow | None = None
    twin: RealTwin | None = None
    try:
        core: WorldCore = env.unwrapped.core  # type: ignore[attr-defined]
        kind = _world_kind(core)
        if kind == "genie":
            root = _bundle_root(env)
            n = int(env.action_space.n)  # type: ignore[attr-defined]
            keymap = Keymap.genie(n, load_latent_mapping(root, n) if root is not None else None)
        else:
            keymap = Keymap.gesim()
        events = _Events(scripted_keys, keymap, live=not headless)
        fps = float(fps or core.render_fps)
        if policy is not None:
            _check_policy(policy, env)
        human = "random" if headless and scripted_keys is None and policy is None else "human"
        controller = "policy" if headless and scripted_keys is None and policy is not None else human
        env.action_space.seed(int(seed))
        if real:
            twin = RealTwin(core, keymap.latent_mapping if kind == "genie" else None)
        twin_step: TwinStep | None = None

        views = tile_views(core.frames())[0]
        if twin is not None:  # a second row of views of the same size
            views = viz.stack_rows([views, views])
        canvas = PlayCanvas(views.shape[:2], int(size), keymap.help_text())
        result.canvas_shape = (canvas.height, canvas.width, 3)
        if record is not None:
            video = VideoRecorder(record, fps)
        if record_dataset is not None:
            data = DatasetRecorder(record_dataset, core, env_id, fps)
        if not headless:
            window = HumanWindow(f"genie-env play {env_id}", fps, scale=1)

        # Play state.
        paused, overlay, gripper, latent = False, False, 1.0, 0
        real_choice: str | None = None  # Genie: the real action behind the chosen latent one (arrows, space)
        twin_return = 0.0
        last_action: Any = None
        action_label = "-"
        message = ""
        if kind == "genie" and keymap.latent_mapping is None:
            message = "no latent mapping shipped: arrows/space do nothing"
        reward, episode_return = 0.0, 0.0
        episode_over = False
        loop_fps, last_time = 0.0, time.perf_counter()

        def reset() -> tuple[Any, dict[str, Any]]:
            nonlocal twin_step, twin_return
            episode_seed = int(seed) + len(result.seeds)
            obs, info = env.reset(seed=episode_seed)
            if twin is not None:
                twin_step = twin.reset(int(info["start"]))
                twin_return = 0.0
                result.twin.append(twin_step)
            result.seeds.append(episode_seed)
            result.returns.append(0.0)
            result.episodes += 1
            if data is not None:
                bank = core.bank
                start = int(info.get("start", 0))
                task = bank.tasks[start] if bank.tasks else str(getattr(core, "task", "") or env_id)
                data.start(obs, episode_seed, task)
            return obs, info

        def show(record_frame: bool) -> None:
            frames = core.frames()[0]
            if overlay and isinstance(core, GeSimCore):
                frames = overlay_trajectory_maps(core, frames)
            views = tile_views(frames[None])[0]
            if twin_step is not None:
                views = viz.stack_rows([views, twin_step.views])
            image = canvas.draw(views, status())
            if window is not None:
                window.show(image)
            if record_frame:
                result.frames += 1
                if video is not None:
                    video.add(image)

        def status() -> list[tuple[str, tuple[int, int, int]]]:
            info = result.last_info
            timing = info.get("timing")
            model_ms = f"{timing.model_s * 1000:.0f} ms" if timing is not None else "-"
            flags = "  PAUSED" if paused else ""
            desc = core.describe()
            if kind == "genie":
                memory = f"memory {desc['memory_window']} frames  MaskGIT steps {desc['maskgit_steps']}"
                memory += f"  temperature {desc['temperature']:g}"
            else:
                memory = f"memory {desc['memory_frames']} of last {desc['memory_span']} frames"
                memory += f"  denoise steps {desc['denoise_steps']} ({desc['schedule']})"
                memory += f"  overlay {'on' if overlay else 'off'}"
            return [
                (
                    f"{env_id}  step {int(core.steps[0])}  episode {result.episodes}  seed {result.seeds[-1]}"
                    f"  control: {controller}{flags}",
                    ACCENT if paused else TEXT,
                ),
                (f"{loop_fps:4.1f} fps  model {model_ms}  reward {reward:+.3f}  return {episode_return:+.3f}", TEXT),
                (f"action: {action_label}", TEXT),
                (memory, TEXT),
                (twin_line(), TEXT),
                (message, ACCENT),
            ]

        def twin_line() -> str:
            if twin_step is None:
                return ""
            line = f"real {twin.env_id} below: PSNR {twin_step.psnr_db:.1f} dB"
            if twin_step.tip_gap_m is None:
                return f"{line}  real action {twin_step.action or '-'}  return {twin_return:+.0f}"
            success = "yes" if twin_step.success else "no"
            return f"{line}  tip gap {twin_step.tip_gap_m * 100:.1f} cm  success {success}"

        def choose(obs: Any, held: set[str]) -> tuple[Any, str]:
            if controller == "policy":
                action, _ = policy.predict(obs, deterministic=True)
                prefix = "policy: "
            elif controller == "random":
                action = env.action_space.sample()
                prefix = "random: "
            elif kind == "genie":
                action, prefix = latent, ""
            else:
                action = np.array([*keymap.motion(held), gripper], np.float32)
                prefix = ""
            if kind == "genie":
                action = int(np.asarray(action).reshape(-1)[0])
                return action, f"{prefix}latent {action}"
            space = env.action_space
            action = np.clip(np.asarray(action, np.float32).reshape(space.shape), space.low, space.high)
            grip = "open" if action[3] > 0 else "close"
            label = f"{prefix}dx {action[0]:+.2f}  dy {action[1]:+.2f}  dz {action[2]:+.2f}  gripper {action[3]:+.2f}"
            return action, f"{label} ({grip})"

        obs, info = reset()
        result.last_obs, result.last_info = obs, info
        show(record_frame=True)

        tick = 0
        while steps is None or tick < steps:
            pressed, held = events.poll(tick)
            quit_now = want_reset = single = False
            for key in pressed:
                binding = keymap.get(key)
                if binding is None:
                    continue
                command = binding.command
                if command == "quit":
                    quit_now = True
                elif command == "pause":
                    paused = not paused
                elif command == "single_step":
                    single = paused
                elif command == "reset":
                    want_reset = True
                elif command in ("fewer_steps", "more_steps"):
                    now = set_sampler_steps(core, sampler_steps(core) + (1 if command == "more_steps" else -1))
                    message = f"sampler steps: {now}"
                elif command == "policy":
                    if policy is None:
                        message = "no policy: pass --policy PATH.zip"
                    else:
                        controller = human if controller == "policy" else "policy"
                        message = f"control: {controller}"
                elif command == "latent":
                    latent = int(binding.value)  # type: ignore[arg-type]
                    real_choice = None
                elif command == "real":
                    mapped = keymap.latent_for(str(binding.value))
                    if mapped is None:
                        message = (
                            "no latent mapping shipped: arrows/space do nothing"
                            if keymap.latent_mapping is None
                            else f"the latent mapping has no {binding.value}"
                        )
                    else:
                        latent, real_choice = mapped, str(binding.value)
                elif command == "gripper":
                    gripper = -gripper
                elif command == "overlay":
                    overlay = not overlay
            if quit_now:
                break

            stepped = False
            if want_reset or (episode_over and (not paused or single)):
                if data is not None:
                    data.end(cut=not episode_over, controller=controller)
                obs, info = reset()
                result.last_obs, result.last_info = obs, info
                reward, episode_return, episode_over = 0.0, 0.0, False
                stepped = True
            elif not paused or single:
                action, action_label = choose(obs, held)
                last_action = action
                obs, reward, terminated, truncated, info = env.step(action)
                if twin is not None:
                    chosen = real_choice if kind == "genie" and controller == "human" else None
                    twin_step = twin.step(np.asarray(action), real_action=chosen)
                    twin_return += twin_step.reward
                    result.twin.append(twin_step)
                reward = float(reward)
                episode_return += reward
                result.returns[-1] = episode_return
                result.steps += 1
                result.last_obs, result.last_info = obs, info
                if data is not None:
                    data.step(last_action, obs, reward, bool(terminated), bool(truncated))
                episode_over = bool(terminated or truncated)
                stepped = True

            now_time = time.perf_counter()
            period = max(now_time - last_time, 1e-6)
            loop_fps = 1 / period if loop_fps == 0 else 0.9 * loop_fps + 0.1 / period
            last_time = now_time
            show(record_frame=stepped)
            tick += 1
        result.iterations = tick
        if data is not None:
            data.end(cut=not episode_over, controller=controller)
    finally:
        if twin is not None:
            twin.close()
        if window is not None:
            window.close()
        if video is not None:
            result.video = video.close()
        if data is not None and data.writer is not None:
            result.dataset = data.root
        env.close()
    return result


def _check_policy(policy: Any, env: gym.Env) -> None:
    """A clear error now if the policy cannot act on this env's observations (instead of mid-play)."""
    try:
        policy.predict(env.observation_space.sample(), deterministic=True)
    except Exception as exc:  # noqa: BLE001 (any failure means the same thing to the player)
        raise ValueError(
            f"the policy cannot act on this env's observations ({env.observation_space}): {type(exc).__name__}: {exc}"
        ) from exc
