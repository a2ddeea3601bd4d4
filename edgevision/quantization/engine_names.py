"""The Q/DQ engines' names, one naming for the registry (engines.py), the child process that runs them
(worker.py) and the reports: `edgevision` places Q/DQ itself and calibrates with ONNX Runtime's tools."""

EDGEVISION_ENGINE = "edgevision"
MODELOPT_ENGINE = "modelopt"
