"""Recording real simulators into datasets (LeRobot v2.1 layout) and reading training windows back."""
