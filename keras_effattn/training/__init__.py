"""Training engine: the one training path, precision, remat, optimisers, strategies, callbacks,
energy and evaluation."""

from keras_effattn.training.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    EpochStats,
    ResumableCheckpoint,
    TrainingDiverged,
)
from keras_effattn.training.distribute import get_strategy
from keras_effattn.training.energy import EnergyMeter
from keras_effattn.training.evaluate import (
    apply_preprocessor,
    classification_metrics,
    evaluate_classifier,
    evaluate_regressor,
    glue_metrics,
    perplexity,
    regression_metrics,
)
from keras_effattn.training.fit import TrainConfig, train_and_evaluate
from keras_effattn.training.optimizers import WarmupDecay, build_optimizer
from keras_effattn.training.precision import precision_scope
from keras_effattn.training.remat import enable_remat

__all__ = [
    "BestCheckpoint",
    "DivergenceGuard",
    "EnergyMeter",
    "EpochStats",
    "ResumableCheckpoint",
    "TrainConfig",
    "TrainingDiverged",
    "WarmupDecay",
    "apply_preprocessor",
    "build_optimizer",
    "classification_metrics",
    "enable_remat",
    "evaluate_classifier",
    "evaluate_regressor",
    "get_strategy",
    "glue_metrics",
    "perplexity",
    "precision_scope",
    "regression_metrics",
    "train_and_evaluate",
]
