"""Trainable components: every model the engine trains, by name (see :mod:`training.components.base`).

Registering a component is one line in :data:`COMPONENTS`:

* ``gesim-vae``: GE-Sim's Wan VAE reconstructing single frames;
* ``gesim``: GE-Sim's multi-view DiT, flow matching on the frozen VAE's latents with trajectory and ray maps;
* ``tokenizer``, ``lam``, ``dynamics``: Genie's video tokenizer, latent action model and MaskGIT dynamics model;
* ``heads``: reward / termination / object-position heads for RL in imagination.
"""

from __future__ import annotations

from training.components.base import Batch, Component, Logs, to_uint8
from training.components.genie import GenieDynamicsComponent, GenieLAMComponent, GenieTokenizerComponent
from training.components.gesim import GeSimComponent, GeSimVAEComponent
from training.components.heads import HeadsComponent

COMPONENTS: dict[str, type[Component]] = {
    "gesim-vae": GeSimVAEComponent,
    "gesim": GeSimComponent,
    "tokenizer": GenieTokenizerComponent,
    "lam": GenieLAMComponent,
    "dynamics": GenieDynamicsComponent,
    "heads": HeadsComponent,
}
"""Every trainable component by name; add one with ``COMPONENTS["name"] = MyComponent``."""


def get_component(name: str) -> type[Component]:
    """The component class registered as ``name``.

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; choose from {sorted(COMPONENTS)}")
    return COMPONENTS[name]


__all__ = [
    "COMPONENTS",
    "Batch",
    "Component",
    "GeSimComponent",
    "GeSimVAEComponent",
    "GenieDynamicsComponent",
    "GenieLAMComponent",
    "GenieTokenizerComponent",
    "HeadsComponent",
    "Logs",
    "get_component",
    "to_uint8",
]
