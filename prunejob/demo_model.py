"""The demo's model: small, real, and trained just enough that filter norms differ.

A ResNet-style network with residual Adds (an equalization group), depthwise
convolutions (channels tied to their producer) and a classifier head. Fresh
initializers give every filter nearly the same norm, which a pruner cannot tell
apart, so each filter's initial kernel is scaled by a random factor (as training
would leave it: a few strong filters, many weak ones), then a few optimizer steps
run on synthetic data. The threshold sweep then prunes visibly different amounts.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_demo_model(input_size: int = 32, classes: int = 10, seed: int = 7):  # -> keras.Model
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    l1 = keras.regularizers.L1(2e-4)

    def conv_bn(x, filters: int, name: str, kernel: int = 3, relu: bool = True):
        x = layers.Conv2D(
            filters, kernel, padding="same", use_bias=False, kernel_regularizer=l1, name=name
        )(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = conv_bn(inputs, 32, "stem")
    for stage, filters in enumerate((32, 64), start=1):
        if filters != x.shape[-1]:
            shortcut = conv_bn(x, filters, f"stage{stage}_proj", kernel=1, relu=False)
        else:
            shortcut = x
        y = conv_bn(x, filters, f"stage{stage}_conv1")
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"stage{stage}_dw")(y)
        y = layers.BatchNormalization(name=f"stage{stage}_dw_bn")(y)
        y = layers.ReLU(name=f"stage{stage}_dw_relu")(y)
        y = conv_bn(y, filters, f"stage{stage}_conv2", kernel=1, relu=False)
        x = layers.Add(name=f"stage{stage}_add")([shortcut, y])
        x = layers.ReLU(name=f"stage{stage}_out")(x)
        x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    x = conv_bn(x, 96, "head_conv", kernel=1)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", kernel_regularizer=l1, name="fc1")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="demo_resnet")


def train_demo_model(model, steps: int = 8, batch: int = 16, seed: int = 7):  # -> keras.Model
    """A few optimizer steps on a synthetic task; enough to spread the norms."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = model.input_shape[1]
    classes = model.output_shape[-1]
    images = rng.normal(size=(steps * batch, size, size, 3)).astype("float32")
    # Labels depend on the image so the gradient signal is not pure noise.
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) * 40).astype("int64") % classes
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense") and layer.name != "predictions":
            kernel, *rest = layer.get_weights()
            scale = rng.uniform(0.02, 1.0, size=kernel.shape[-1]).astype("float32")
            layer.set_weights([kernel * scale, *rest])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return model
