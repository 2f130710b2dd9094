"""One process of tests/test_multi_worker.py: trains the tiny classifier through the engine.

Usage: ``python tests/multiworker_worker.py STRATEGY OUTPUT_DIR RESULT_JSON`` with ``TF_CONFIG``
set for ``multi_worker`` (one process per worker, the same command on each, as on several
machines). The strategy is made first, before any other TensorFlow op, as
`tf.distribute.MultiWorkerMirroredStrategy` requires. Every worker passes the same OUTPUT_DIR;
the engine writes it on the chief only. Each process writes RESULT_JSON: its task, the number
of replicas, the returned evaluation, and the worker copies of run folders it saw in its temp
directory when training ended (a non-chief writes there, not into OUTPUT_DIR).
"""

import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 8
TRAIN_EXAMPLES = 32  # 4 steps of the global batch, 2 epochs
EVAL_EXAMPLES = 16


def config(strategy_name):
    from keras_effattn.training import TrainConfig

    return TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, eval_batch_size=8,
                       learning_rate=3e-3, warmup_ratio=0.25, energy=False, jit_compile=False,
                       tensorboard=False, seed=3, save_every_n_steps=2,
                       strategy=strategy_name)


def main(strategy_name, output_dir, result_path):
    import keras

    from keras_effattn.training.distribute import get_strategy

    keras.config.disable_traceback_filtering()  # whole tracebacks in the test's failure report

    strategy = get_strategy(strategy_name)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from training_helpers import TinyData, tiny_classifier

    from keras_effattn.training import train_and_evaluate

    seen = []

    class SeeWorkerFolders(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            temp = pathlib.Path(tempfile.gettempdir())
            seen[:] = sorted(p.name for p in temp.glob("keras_effattn_worker_*")
                             if (p / "checkpoint" / "state.json").is_file())

    results = train_and_evaluate(
        config(strategy_name), tiny_classifier, TinyData(TRAIN_EXAMPLES),
        TinyData(EVAL_EXAMPLES, seed=1), output_dir, verbose=0, strategy=strategy,
        callbacks=[SeeWorkerFolders()])
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    pathlib.Path(result_path).write_text(json.dumps({
        "task": task,
        "replicas": strategy.num_replicas_in_sync,
        "evaluation": {k: results["evaluation"][k] for k in ("accuracy", "loss", "predictions")},
        "final_train_loss": results["training"]["final_train_loss"],
        "worker_folders_during_training": seen,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
