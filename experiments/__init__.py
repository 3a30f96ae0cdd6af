"""Experiment launchers, configs and benchmarks of jaxflows (importable once jaxflows is installed)."""
