"""Feature specifications shared by the sources, the dataset writer and the reader.

A *feature* is one named per-frame quantity (``observation.state``, ``action``, ...), described in
LeRobot's ``meta/info.json`` style: a dtype, a shape, and optional names for the entries.
Images are ``dtype="video"`` features of shape ``(H, W, 3)``, stored as one mp4 per episode and camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: dtypes a non-video feature may have.
SCALAR_DTYPES = ("float32", "float64", "int64", "bool")


@dataclass(frozen=True)
class Feature:
    """One per-frame feature.

    Attributes:
        dtype: ``"video"`` for camera images, else one of :data:`SCALAR_DTYPES`.
        shape: per-frame shape, e.g. ``(64, 64, 3)`` for an image or ``(4,)`` for an action.
        names: optional names of the entries of a vector feature.
        info: extra metadata written to ``meta/info.json`` (camera intrinsics, conventions, units).
    """

    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype != "video" and self.dtype not in SCALAR_DTYPES:
            raise ValueError(f"feature dtype must be 'video' or one of {SCALAR_DTYPES}, got {self.dtype!r}")
        if self.dtype == "video" and (len(self.shape) != 3 or self.shape[2] != 3):
            raise ValueError(f"a video feature has shape (H, W, 3), got {self.shape}")
        if self.names is not None and len(self.shape) == 1 and len(self.names) != self.shape[0]:
            raise ValueError(f"{len(self.names)} names given for a feature of shape {self.shape}")

    @property
    def is_video(self) -> bool:
        """True for camera images."""
        return self.dtype == "video"

    @property
    def size(self) -> int:
        """Number of scalars per frame."""
        return int(np.prod(self.shape))

    def to_json(self) -> dict[str, Any]:
        """The ``meta/info.json`` entry of this feature."""
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}
        if self.is_video:
            out["names"] = ["height", "width", "channels"]
        if self.info:
            out["info"] = self.info
        return out

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Feature:
        """Inverse of :meth:`to_json`."""
        names = entry.get("names")
        if entry["dtype"] == "video":
            names = None
        return cls(entry["dtype"], tuple(int(s) for s in entry["shape"]), names, dict(entry.get("info", {})))

    def check(self, name: str, value: np.ndarray) -> np.ndarray:
        """Validate one frame's value and cast it to the stored dtype.

        Raises:
            ValueError: if the shape differs or a float value is not finite.
        """
        arr = np.asarray(value)
        if arr.shape != self.shape:
            raise ValueError(f"feature {name!r}: expected shape {self.shape}, got {arr.shape}")
        if self.is_video:
            if arr.dtype != np.uint8:
                raise ValueError(f"feature {name!r}: expected uint8 images, got {arr.dtype}")
            return arr
        if self.dtype.startswith("float") and not np.all(np.isfinite(arr)):
            raise ValueError(f"feature {name!r}: non-finite value {arr}")
        return arr.astype(self.dtype)


#: Bookkeeping columns every LeRobot v2.1 parquet file carries.
INDEX_FEATURES: dict[str, Feature] = {
    "timestamp": Feature("float32", (1,)),
    "frame_index": Feature("int64", (1,)),
    "episode_index": Feature("int64", (1,)),
    "index": Feature("int64", (1,)),
    "task_index": Feature("int64", (1,)),
}
