"""Compression of the PyTorch model: structured pruning (prune.py, its family registry), pruning recovery,
distillation and the teacher cache. Quantization is edgevision/quantization/; the staged run is pipeline/."""
