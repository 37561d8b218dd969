"""Running shipped models (no torch): the one ``Runner`` over ONNX Runtime and LiteRT /
tflite-runtime, model loading, evaluate, verify, bench and report. Imports: ``core``."""
