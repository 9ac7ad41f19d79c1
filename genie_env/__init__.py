"""genie-env: learned simulators that are ordinary Gymnasium environments."""

__version__ = "0.1.0"
