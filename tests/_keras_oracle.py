"""Run by a Python that has Keras (JAX backend, no TensorFlow): build keras.applications.MobileNet with
random weights and randomised batch-norm statistics, save them in the legacy HDF5 weights layout that
Keras' published mobilenet_*_tf.h5 files use, and write Keras' logits on the given input.

    python _keras_oracle.py ALPHA RES X.npy OUT.h5 LOGITS.npy

X.npy: float32 NHWC batch in Keras' input scale (x/127.5 - 1). Prints the Keras version.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402


def main(alpha: float, res: int, x_path: str, h5_path: str, logits_path: str) -> None:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(res, res, 3),
                                         classifier_activation=None)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c).astype("float32"), rng.normal(0, 0.2, c).astype("float32"),
                               rng.normal(0, 0.2, c).astype("float32"), rng.uniform(0.5, 2.0, c).astype("float32")])
        elif isinstance(layer, keras.layers.Conv2D) and layer.name == "conv_preds":
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.1, b.shape).astype("float32")])
    with h5py.File(h5_path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    x = np.load(x_path)
    np.save(logits_path, np.asarray(model.predict(x, verbose=0), dtype=np.float32))
    print(f"keras {keras.__version__} backend {keras.backend.backend()}")


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
