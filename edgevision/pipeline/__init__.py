"""Runs over a target's stages: compress, export, sweep; the target registry, recipes and run directories."""
