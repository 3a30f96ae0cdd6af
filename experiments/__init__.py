"""Experiment launchers, configs and benchmarks of jaxflows.

Importable once jaxflows is installed.
"""
