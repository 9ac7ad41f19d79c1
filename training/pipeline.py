"""``genie-env train genie``: the three Genie stages in order, then a world-model bundle.

Stages run one after the other in ``OUT/tokenizer``, ``OUT/lam`` and ``OUT/dynamics`` (each an ordinary run
directory: config, logs, checkpoints), the dynamics stage reading the other two; the result is assembled into
``OUT/bundle`` (:func:`~genie_env.models.genie.assemble_genie_bundle`), which ``genie-env eval`` and the Genie
environment load. With ``resume`` every stage continues its latest checkpoint, and a finished stage is a no-op,
so an interrupted pipeline picks up where it stopped.

``--set`` overrides apply to every stage they fit: ``train.*`` and ``data.*`` keys to all three, a ``component.*``
key to the stages whose config has that field (``component.preset`` and ``component.clip_frames`` to all).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from genie_env.models.genie import assemble_genie_bundle
from training.components import get_component
from training.config import ConfigError, load_run_config, parse_overrides
from training.engine import train_component

GENIE_STAGES: tuple[str, ...] = ("tokenizer", "lam", "dynamics")


def _stage_overrides(stage: str, overrides: dict[str, str]) -> list[str]:
    fields = {f.name for f in dataclasses.fields(get_component(stage).config_class)}
    kept = []
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section != "component" or name.split(".")[0] in fields:
            kept.append(f"{key}={value}")
    return kept


def train_genie(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    config_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Trains tokenizer, LAM and dynamics model on ``data`` under ``out``; returns the bundle directory.

    Raises:
        ConfigError: For a ``component.*`` override that no stage has, or ``component.tokenizer/lam`` (set here).
    """
    root = Path(out)
    parsed = parse_overrides(overrides)
    for key in parsed:
        section, _, name = key.partition(".")
        if section != "component":
            continue
        if name in ("tokenizer", "lam"):
            raise ConfigError(f"{key} is set by the genie pipeline (the runs under {root}); leave it out")
        if not any(_stage_overrides(stage, {key: parsed[key]}) for stage in GENIE_STAGES):
            raise ConfigError(f"unknown key {key!r}: no Genie stage has component field {name!r}")
    for stage in GENIE_STAGES:
        cls = get_component(stage)
        stage_overrides = _stage_overrides(stage, parsed)
        stage_overrides += [f"data.path={data}", f"train.out_dir={root / stage}"]
        if stage == "dynamics":
            stage_overrides += [f"component.tokenizer={root / 'tokenizer'}", f"component.lam={root / 'lam'}"]
        config = load_run_config(cls.config_class, config_path, stage_overrides)
        print(f"== genie stage {stage} -> {root / stage}")
        train_component(stage, config, resume=resume, progress=progress)
    bundle = assemble_genie_bundle(
        root / "tokenizer",
        root / "lam",
        root / "dynamics",
        root / "bundle",
        provenance={"pipeline": "genie-env train genie", "data": str(data), "overrides": list(overrides)},
    )
    print(f"genie world model -> {bundle}")
    return bundle
