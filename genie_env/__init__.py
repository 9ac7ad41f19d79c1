"""genie-env: learned simulators that are ordinary Gymnasium environments."""

__version__ = "0.1.0"

from genie_env.registration import register_envs  # noqa: E402 (the version must exist before submodules import it)

register_envs()
