"""Optimisers and learning-rate schedules for fine-tuning: AdamW, Adam, SGD with momentum; linear
or cosine decay after a linear warmup; layer-wise learning-rate decay (LLRD); gradient clipping and
decoupled weight decay (LayerNorm scales and biases excluded).

LLRD gives the classifier head the full learning rate and each encoder layer below it a factor
`decay` less: with L encoder layers, layer i (0-based from the bottom) gets ``decay**(L - i)`` and
the embeddings ``decay**(L + 1)``. It is implemented as a per-variable factor on the learning rate
inside the optimizer's own ``update_step``, so Adam's moments and Keras' saving are untouched.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> opt = build_optimizer("adamw", 1e-3, total_steps=100, warmup_ratio=0.1, clipnorm=1.0)
>>> float(opt.learning_rate) < 1e-3  # still warming up at step 0
True

References:
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification" (discriminative
    fine-tuning), ACL 2018; Clark et al., "ELECTRA", ICLR 2020 (layer-wise LR decay).
"""

import math

import keras
from keras import ops

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("linear", "cosine", "constant")
NO_DECAY_NAMES = ("bias", "gamma", "beta", "layer_norm", "layernorm")


@keras.saving.register_keras_serializable(package="keras_effattn")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate`, then linear, cosine or constant decay.

    Args:
        peak_learning_rate: float. The learning rate reached at the end of warmup.
        total_steps: int. Steps of the whole run; decay reaches `end_ratio * peak` there.
        warmup_steps: int, default 0. Linear warmup length (the first step uses
            ``peak / warmup_steps``, never 0).
        decay: str, default "linear". One of "linear", "cosine", "constant".
        end_ratio: float, default 0.0. Final learning rate as a fraction of the peak.
    """

    def __init__(
        self, peak_learning_rate, total_steps, warmup_steps=0, decay="linear", end_ratio=0.0
    ):
        if not peak_learning_rate > 0:
            raise ValueError(f"peak_learning_rate must be > 0, got {peak_learning_rate}.")
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        if not 0 <= int(warmup_steps) <= int(total_steps):
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}."
            )
        if decay not in SCHEDULES:
            raise ValueError(f"decay must be one of {SCHEDULES}, got {decay!r}.")
        if not 0.0 <= end_ratio <= 1.0:
            raise ValueError(f"end_ratio must be in [0, 1], got {end_ratio}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end_ratio = float(end_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = peak * ops.minimum(step + 1.0, warm) / warm
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "linear":
            shape = 1.0 - progress
        elif self.decay == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            shape = ops.ones_like(progress)
        decay_lr = peak * (self.end_ratio + (1.0 - self.end_ratio) * shape)
        if self.warmup_steps == 0:
            return decay_lr
        return ops.where(step < self.warmup_steps, warmup_lr, decay_lr)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "end_ratio": self.end_ratio,
        }


class _LayerwiseLearningRate:
    """Mixin: multiplies the learning rate of each variable by ``lr_multipliers[variable.path]``."""

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._lr_scales = []

    def build(self, variables):
        super().build(variables)
        self._lr_scales = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)] if self._lr_scales else 1.0
        if scale != 1.0:
            learning_rate = ops.multiply(learning_rate, scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="keras_effattn")
class LayerwiseAdamW(_LayerwiseLearningRate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with per-variable learning-rate multipliers (`lr_multipliers`)."""


@keras.saving.register_keras_serializable(package="keras_effattn")
class LayerwiseAdam(_LayerwiseLearningRate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with per-variable learning-rate multipliers (`lr_multipliers`)."""


@keras.saving.register_keras_serializable(package="keras_effattn")
class LayerwiseSGD(_LayerwiseLearningRate, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable learning-rate multipliers (`lr_multipliers`)."""


def find_backbone(model):
    """Returns the KerasHub-style backbone inside `model` (a layer with `transformer_layers`)."""
    if hasattr(model, "transformer_layers"):
        return model
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "transformer_layers"):
        return backbone
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "transformer_layers"):
            return layer
    return None


def layerwise_lr_multipliers(model, decay):
    """Learning-rate factors per variable path for layer-wise decay.

    Args:
        model: a Keras model holding a backbone with a `transformer_layers` list (KerasHub
            encoders and keras_effattn backbones have one).
        decay: float in (0, 1]. The factor per layer, e.g. 0.95.

    Returns:
        dict ``{variable.path: factor}`` for the backbone's variables (head variables are absent,
        i.e. factor 1).
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {decay}; use 1.0 to disable it.")
    backbone = find_backbone(model)
    if backbone is None:
        raise ValueError(
            "layer_decay needs a backbone with a `transformer_layers` list (a KerasHub encoder); "
            f"none was found in {model.name!r}. Set layer_decay=1.0 for this model."
        )
    layers = list(backbone.transformer_layers)
    depth = len(layers)
    factors = {}
    for index, layer in enumerate(layers):
        for variable in layer.weights:
            factors[variable.path] = decay ** (depth - index)
    for variable in backbone.weights:
        factors.setdefault(variable.path, decay ** (depth + 1))
    return factors


def build_optimizer(
    name="adamw",
    learning_rate=5e-5,
    total_steps=1,
    warmup_ratio=0.0,
    warmup_steps=None,
    schedule="linear",
    weight_decay=0.01,
    clipnorm=1.0,
    momentum=0.9,
    layer_decay=1.0,
    model=None,
):
    """Builds an optimiser with a warmup schedule, clipping, weight decay and optional LLRD.

    Args:
        name: str, default "adamw". One of "adamw", "adam", "sgd" (with `momentum`).
        learning_rate: float, default 5e-5. Peak learning rate.
        total_steps: int, default 1. Optimiser steps in the whole run.
        warmup_ratio: float, default 0.0. Warmup length as a fraction of `total_steps`.
        warmup_steps: int or None. Warmup length in steps; overrides `warmup_ratio`.
        schedule: str, default "linear". "linear", "cosine" or "constant" after warmup.
        weight_decay: float, default 0.01. Decoupled decay for AdamW; L2-free for Adam/SGD
            (Keras applies it decoupled for every optimiser). LayerNorm and bias are excluded.
        clipnorm: float or None, default 1.0. Global-norm clipping of the gradients.
        momentum: float, default 0.9. SGD momentum.
        layer_decay: float, default 1.0 (off). Layer-wise LR decay factor; needs `model`.
        model: the model to be trained, needed when `layer_decay < 1`.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}.")
    if weight_decay is not None and weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if clipnorm is not None and not clipnorm > 0:
        raise ValueError(f"clipnorm must be > 0 or None, got {clipnorm}.")
    total_steps = max(int(total_steps), 1)
    if warmup_steps is None:
        warmup_steps = int(round(warmup_ratio * total_steps))
    lr = WarmupDecay(learning_rate, total_steps, min(int(warmup_steps), total_steps), schedule)
    multipliers = None
    if layer_decay != 1.0:
        if model is None:
            raise ValueError("layer_decay < 1 needs the `model` argument.")
        multipliers = layerwise_lr_multipliers(model, layer_decay)
    common = {"learning_rate": lr, "clipnorm": clipnorm, "lr_multipliers": multipliers}
    wd = weight_decay or None
    if name == "adamw":
        optimizer = LayerwiseAdamW(weight_decay=wd or 0.0, **common)
    elif name == "adam":
        optimizer = LayerwiseAdam(weight_decay=wd, **common)
    else:
        optimizer = LayerwiseSGD(momentum=momentum, weight_decay=wd, **common)
    if wd:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
