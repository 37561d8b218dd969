"""int8 post-training static quantization with ONNX Runtime (no torch): typed options, calibration,
recipes, the QDQ pipeline and the fidelity report. Imports: ``core``."""
