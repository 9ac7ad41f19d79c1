"""Rendering of world-model envs: views tiled into one image, and the pygame window of ``render_mode="human"``."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from genie_env import viz
from genie_env.eval.metrics import to_uint8


def tile_views(frames: torch.Tensor, gap: int = 2) -> np.ndarray:
    """Every env's views side by side: float ``(B, V, 3, H, W)`` in [-1, 1] -> ``uint8 (B, H, V*W + gaps, 3)``."""
    views = rearrange(to_uint8(frames.detach()), "b v c h w -> v b h w c").cpu().numpy()
    return viz.tile_views(list(views), gap=gap)


class HumanWindow:
    """A pygame window showing frames upscaled with crisp pixels, paced to ``fps``.

    pygame is imported on first use, so head-less users never need a display.

    Args:
        title: Window caption.
        fps: Frames per second to pace ``show`` to.
        scale: Integer upscale of the 64x64 frames.
    """

    def __init__(self, title: str, fps: float, scale: int = 6) -> None:
        import pygame  # deferred: only "human" rendering needs a display

        self._pygame = pygame
        pygame.init()
        pygame.display.set_caption(title)
        self.fps, self.scale = fps, scale
        self.clock = pygame.time.Clock()
        self.screen: pygame.Surface | None = None

    def show(self, image: np.ndarray) -> None:
        """Draws ``uint8 (H, W, 3)`` and waits for the next frame slot."""
        pygame = self._pygame
        big = viz.upscale(image, self.scale)
        size = (big.shape[1], big.shape[0])
        if self.screen is None or self.screen.get_size() != size:
            self.screen = pygame.display.set_mode(size)
        pygame.event.pump()  # keeps the window responsive
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(big.swapaxes(0, 1)))
        self.screen.blit(surface, (0, 0))
        pygame.display.flip()
        self.clock.tick(self.fps)

    def close(self) -> None:
        """Closes the window."""
        self._pygame.display.quit()
        self.screen = None
