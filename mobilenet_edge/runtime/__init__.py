"""Running shipped models (no torch). Imports: ``core`` only.

Modules, one job each: ``runner`` (the one ``Runner`` over ONNX Runtime and LiteRT / tflite-runtime,
quantized I/O), ``tflite_backend`` (which .tflite interpreter, its load probe, stderr capture),
``scores`` (softmax, top-k, (de)quantization), ``names`` (runtime names, defined once), ``load``
(``open_model``: a model with its preprocessing and labels), ``evaluate``, ``verify``, ``bench``, ``report``.
"""
