"""Compression: recipes, per-family presets, and the staged pipeline behind `edgevision compress`."""
