"""Experiment configs (``ml_collections``); shared pieces live in :mod:`experiments.configs.common`."""
