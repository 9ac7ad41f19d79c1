"""Training: one ``accelerate`` engine (:mod:`training.engine`) for every component (:mod:`training.components`).

* :mod:`training.config`: typed ``TrainConfig`` / ``DataConfig`` / per-component config dataclasses, YAML and
  ``--set key=value`` overrides;
* :mod:`training.components`: the component protocol (``forward(batch) -> (loss, logs)``, ``models()``,
  ``samples(batch)``) and the ``COMPONENTS`` registry;
* :mod:`training.engine`: ``Trainer`` (checkpoints, exact resume, TensorBoard, EMA) and ``train_component``;
* :mod:`training.cli`: ``genie-env train`` (entry point ``genie_env.commands: train``).

Checkpoints themselves live in the core package, :mod:`genie_env.checkpoint`.
"""
