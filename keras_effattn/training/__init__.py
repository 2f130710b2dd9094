"""Training engine: the one training path, precision, remat, optimisers, strategies, callbacks,
energy and evaluation."""

from keras_effattn.training.callbacks import BestCheckpoint, EpochStats, ResumableCheckpoint
from keras_effattn.training.distribute import get_strategy
from keras_effattn.training.energy import EnergyMeter
from keras_effattn.training.evaluate import (
    classification_metrics,
    evaluate_classifier,
    glue_metrics,
    perplexity,
)
from keras_effattn.training.fit import TrainConfig, train_and_evaluate
from keras_effattn.training.optimizers import WarmupDecay, build_optimizer
from keras_effattn.training.precision import precision_scope
from keras_effattn.training.remat import enable_remat

__all__ = [
    "BestCheckpoint",
    "EnergyMeter",
    "EpochStats",
    "ResumableCheckpoint",
    "TrainConfig",
    "WarmupDecay",
    "build_optimizer",
    "classification_metrics",
    "enable_remat",
    "evaluate_classifier",
    "get_strategy",
    "glue_metrics",
    "perplexity",
    "precision_scope",
    "train_and_evaluate",
]
