"""What runs on the deployment device without edgevision: plain Python, numpy, Pillow and the runtimes.

These modules are copied into the CPU deploy bundle (`export --target cpu`) and run there as scripts
(`python select_model.py`, `python predict.py`); edgevision imports the same code for `deploy-check`. So
they import nothing of edgevision's, and nothing beyond numpy, Pillow, onnxruntime and openvino (the last
two only when a candidate needs them).
"""
