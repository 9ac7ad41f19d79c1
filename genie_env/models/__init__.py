"""Neural networks of the learned simulators."""
