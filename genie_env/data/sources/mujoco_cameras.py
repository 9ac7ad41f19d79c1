"""Offscreen multi-view rendering of a MuJoCo scene, with each view's camera in the OpenCV convention.

Every view is a MuJoCo *free* camera (``lookat``, ``distance``, ``azimuth``, ``elevation``). A view may
follow a site of the model (the hand camera follows the gripper): its ``lookat`` is then the site position
plus a fixed offset, so the camera translates with the gripper.

Camera parameters are read back from the GL camera MuJoCo actually rendered with (the average of the scene's
two eye cameras, ``mjv_averageCamera``, which is what a mono render uses; ``scene.camera[0]`` alone is the left
eye, 3.4 cm to the side), never re-derived from the free-camera parameters, so the geometry cannot drift
from the pixels:

* intrinsics ``K`` (3x3) in pixels for the rendered size, pixel centres at ``u + 0.5``, ``v + 0.5``;
* extrinsics ``c2w`` (4x4): camera-to-world in the **OpenCV** convention (x right, y down, z forward).
  MuJoCo/OpenGL cameras look along -z with y up; the conversion is ``R_cv = [right, -up, forward]``.

A world point ``p`` lands at pixel ``(u, v) = (K @ (R^T (p - t)))[:2] / z`` where ``R, t`` come from ``c2w``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Headless rendering: Mesa's EGL works on these machines without a display.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)


@dataclass(frozen=True)
class CameraSpec:
    """A free camera around the scene, optionally following a site.

    Attributes:
        name: view name, used as ``observation.images.<name>``.
        lookat: point the camera looks at (world frame, metres); an offset from the site if ``follow_site``.
        distance: distance from the camera to ``lookat`` (metres).
        azimuth: degrees, MuJoCo convention (0 looks along +x, 90 along +y).
        elevation: degrees, negative looks down.
        follow_site: name of a model site the camera translates with, or None for a fixed camera.
    """

    name: str
    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float
    follow_site: str | None = None

    @property
    def moving(self) -> bool:
        """True when the camera's extrinsics change from frame to frame."""
        return self.follow_site is not None


def gl_camera_to_opencv(gl_camera: mujoco.MjvGLCamera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Convert a rendered MuJoCo GL camera into OpenCV intrinsics and camera-to-world extrinsics.

    Args:
        gl_camera: ``mjv_averageCamera(scene.camera[0], scene.camera[1])`` after ``update_scene``.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        ``(K, c2w)``: ``K`` float64 (3, 3) and ``c2w`` float64 (4, 4) in the OpenCV convention.
    """
    if gl_camera.orthographic:
        raise ValueError("orthographic MuJoCo cameras are not supported; expected a perspective camera")
    near = float(gl_camera.frustum_near)
    bottom, top = float(gl_camera.frustum_bottom), float(gl_camera.frustum_top)
    center = float(gl_camera.frustum_center)
    # MuJoCo derives the half-width from the viewport aspect when frustum_width is 0 (mono cameras).
    half_w = float(gl_camera.frustum_width) or 0.5 * (width / height) * (top - bottom)
    fx = width * near / (2.0 * half_w)
    fy = height * near / (top - bottom)
    cx = 0.5 * width * (1.0 - center / half_w)
    cy = 0.5 * height * (1.0 + (top + bottom) / (top - bottom))
    intrinsics = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    forward = np.asarray(gl_camera.forward, dtype=np.float64)
    up = np.asarray(gl_camera.up, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    up /= np.linalg.norm(up)
    right = np.cross(forward, up)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, -up, forward], axis=1)
    c2w[:3, 3] = np.asarray(gl_camera.pos, dtype=np.float64)
    return intrinsics, c2w


class MultiViewRenderer:
    """Renders several free cameras of one MuJoCo model at one resolution.

    Args:
        model: the MuJoCo model (its ``vis.quality.offsamples`` is set to 0: multisampling costs 3-4x
            on a software renderer and blurs nothing useful at 64x64).
        height: image height in pixels.
        width: image width in pixels.
        cameras: the views, in observation order.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, cameras: list[CameraSpec]) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        model.vis.quality.offsamples = 0
        # The offscreen buffer must hold the requested size.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.model = model
        self.height, self.width = height, width
        self.cameras = list(cameras)
        self._renderer = mujoco.Renderer(model, height, width)
        self._free = mujoco.MjvCamera()
        self._free.type = mujoco.mjtCamera.mjCAMERA_FREE

    def _place(self, data: mujoco.MjData, spec: CameraSpec) -> mujoco.MjvCamera:
        lookat = np.asarray(spec.lookat, dtype=np.float64)
        if spec.follow_site is not None:
            lookat = lookat + data.site(spec.follow_site).xpos
        self._free.lookat[:] = lookat
        self._free.distance = spec.distance
        self._free.azimuth = spec.azimuth
        self._free.elevation = spec.elevation
        return self._free

    def render(
        self, data: mujoco.MjData
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Render every view.

        Returns:
            ``(images, intrinsics, c2w)``: per view name, a uint8 (H, W, 3) image, a (3, 3) ``K`` and a
            (4, 4) camera-to-world matrix (OpenCV convention, world frame).
        """
        images, intrinsics, c2w = {}, {}, {}
        for spec in self.cameras:
            self._renderer.update_scene(data, camera=self._place(data, spec))
            images[spec.name] = self._renderer.render().copy()
            scene = self._renderer.scene
            # A mono render draws from the average of the two eye cameras; camera[0] is the left eye.
            mono = mujoco.mjv_averageCamera(scene.camera[0], scene.camera[1])
            intrinsics[spec.name], c2w[spec.name] = gl_camera_to_opencv(mono, self.height, self.width)
        return images, intrinsics, c2w

    def render_segmentation(self, data: mujoco.MjData, name: str) -> np.ndarray:
        """Render one view as a segmentation map.

        Returns:
            int32 (H, W, 2): channel 0 is the object id, channel 1 the object type (``mjtObj``); -1 where
            nothing was hit.
        """
        spec = next((c for c in self.cameras if c.name == name), None)
        if spec is None:
            raise KeyError(f"unknown camera {name!r}; expected one of {[c.name for c in self.cameras]}")
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(data, camera=self._place(data, spec))
            return self._renderer.render().copy()
        finally:
            self._renderer.disable_segmentation_rendering()

    def close(self) -> None:
        """Release the GL context (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
