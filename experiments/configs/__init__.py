"""Experiment configs (``ml_collections``).

Shared pieces and conventions: :mod:`experiments.configs.common`.
"""
