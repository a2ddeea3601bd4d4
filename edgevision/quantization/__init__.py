"""INT8, in one place: `quantize.quantize(run, request)` is the one call (NNCF for OpenVINO, ONNX Runtime's static
Q/DQ for its CPU kernels, a Q/DQ engine for TensorRT), each held to the run's accuracy budget by its guard.

budget.py      the accuracy budget (Guard) and the guards' time (GuardClock)
run.py         what a quantization needs from its run (QuantizationRun: the pipeline's Context is one)
quantize.py    the requests and the dispatch
openvino.py    NNCF post-training quantization; the recipe's `quantization` settings (NNCFSettings)
onnxruntime.py ONNX Runtime's static Q/DQ, its profiles and CPU formats; the recipe's `qdq` settings
engines.py     the Q/DQ engines for TensorRT (edgevision's placement, NVIDIA Model Optimizer: modelopt.py)
worker.py      the child process that runs ONNX Runtime's and Model Optimizer's quantizers
openvino_guard.py, qdq_guard.py, sensitivity.py   the accuracy guards and the per-node sensitivity they rank by
"""
