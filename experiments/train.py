"""Fine-tune a Transformer encoder with efficient attention on a text-classification task.

Question answered: how accurate, fast and memory-hungry is fine-tuning with a given attention
variant, recipe and precision? With no flags this is the project's offline main job: fine-tune
the pretrained all-MiniLM-L6-v2 ("minilm-l6") with exact fused attention on a balanced IMDB
slice from ../shared/data/aclImdb_v1.tar.gz and evaluate it on 2,000 balanced test reviews.
Every run writes a self-describing folder (config with versions and device, metrics JSON,
per-epoch CSV, training-curve and confusion-matrix PNGs, a Markdown report, model.keras,
TensorBoard logs); `DONE` is written last. Restarting a killed run with the same flags resumes it.

Examples:
    python -m experiments.train                      # the main job (8 min measured on 2 idle CPU cores)
    python -m experiments.train --train_per_class=64 --eval_per_class=32 --max_length=64 \\
        --attention="exact*4,favor(num_features=64)*2" --output_dir=runs/quick
    python -m experiments.train --dataset=glue/sst2 --train_per_class=2000 --max_length=64
    python -m experiments.train --dataset=glue/stsb --train_per_class=4000 --max_length=128

GLUE tasks are evaluated with their own classes and metrics: MNLI has three classes (evaluated
on dev_matched), STS-B is a regression task (one output, mean squared error, Pearson and
Spearman correlation; there `--train_per_class`/`--eval_per_class` count examples).
Exit status: 0 on success, 2 with one line on stderr for bad input (flags, paths, the attention
spec, data), checked before anything is written; 1 with a traceback for an internal error.
"""

import pathlib

from absl import flags

from experiments import common

_DEFINED_BEFORE = set(flags.FLAGS)
# --- data ---
flags.DEFINE_string("dataset", "imdb", "imdb, or glue/<task> (cola, sst2, mrpc, qqp, stsb, "
                    "mnli, qnli, rte, wnli).")
flags.DEFINE_string("data_source", None, "IMDB folder/.tar.gz, 'tfds', or a GLUE folder "
                    "(default: in --data_dir; when given, --data_dir is not needed).")
flags.DEFINE_integer("train_per_class", 2000, "Balanced training examples per class (0: all).",
                     lower_bound=0)
flags.DEFINE_integer("eval_per_class", 1000, "Balanced held-out examples per class (0: all).",
                     lower_bound=0)
flags.DEFINE_integer("val_per_class", 0, "Validation examples per class taken from the "
                     "training split (0: none); enables early stopping and --restore_best.",
                     lower_bound=0)
# --- model ---
flags.DEFINE_string("backbone", "minilm-l6", "minilm-l6, a Hugging Face/KerasHub folder, a "
                    "KerasHub preset, or 'tiny' (a 2-layer random-init DistilBERT).")
flags.DEFINE_string("attention", "exact", "Attention spec, e.g. exact, "
                    "'exact*4,favor(num_features=128)*2', 'lowrank(k=64)'.")
flags.DEFINE_integer("max_length", 256, "Token sequence length (longer texts are truncated).",
                     lower_bound=2)
flags.DEFINE_enum("pooling", "mean", ["mean", "cls"], "Sentence pooling of the classifier.")
flags.DEFINE_float("dropout", 0.1, "Classifier-head dropout.")
flags.DEFINE_float("backbone_dropout", None, "Override the backbone's dropout rate.")
flags.DEFINE_integer("head_hidden_dim", 0, "Hidden ReLU layer in the head (0: none, linear).")
# --- optimisation ---
flags.DEFINE_integer("epochs", 1, "Epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.", lower_bound=0.0)
flags.DEFINE_enum("optimizer", "adamw", ["adamw", "adam", "sgd"], "Optimiser.")
flags.DEFINE_enum("schedule", "linear", ["linear", "cosine", "constant"], "Decay after warmup.")
flags.DEFINE_float("warmup_ratio", 0.1, "Warmup as a fraction of all steps.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay.")
flags.DEFINE_float("clipnorm", 1.0, "Global gradient-norm clipping (0: off).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("layer_decay", 1.0, "Layer-wise learning-rate decay (1.0: off).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_boolean("freeze_embeddings", True, "Freeze the token embedding table (11.7M "
                     "parameters in MiniLM: its dense AdamW update is costly on CPU).")
flags.DEFINE_integer("freeze_layers", 0, "Freeze the bottom N encoder layers.")
flags.DEFINE_integer("early_stopping_patience", None, "Early stopping patience (epochs).")
flags.DEFINE_boolean("restore_best", False, "Evaluate the best validation checkpoint.")
# --- engine ---
flags.DEFINE_enum("precision", "auto",
                  ["float32", "mixed_float16", "mixed_bfloat16", "auto"],
                  "Precision policy. auto: mixed_float16 on a GPU (compute capability >= 7.0), "
                  "mixed_bfloat16 on a CPU with bf16 units (AMX or AVX-512 BF16), float32 "
                  "elsewhere; the run folder records the policy used.")
flags.DEFINE_boolean("remat", False, "Gradient checkpointing of the encoder layers.")
flags.DEFINE_boolean("xla", False, "XLA-compile the train and predict steps (off by default: "
                     "on CPU, XLA's matmuls are about 2x slower than TensorFlow's oneDNN ones; "
                     "see BUILD_NOTES.md; turn it on for GPUs/TPUs).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("save_every_n_steps", 25, "Save resumable state this often (and each epoch).")
flags.DEFINE_boolean("energy", True, "Track energy and CO2 with CodeCarbon (offline).")
flags.DEFINE_string("country", "USA", "ISO code of the grid for the CO2 estimate.")
flags.DEFINE_boolean("save_model", True, "Save model.keras.")
flags.DEFINE_string("name", None, "Run name (default: derived from the main settings).")
common.define_common_flags()

FLAGS = flags.FLAGS
FLAG_NAMES = sorted((set(FLAGS) - _DEFINED_BEFORE) | set(common.COMMON_FLAGS))
TINY_BACKBONE = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64}
GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def glue_task(dataset):
    """The `GlueTask` of ``--dataset=glue/<task>``, or None for another dataset."""
    if not dataset.startswith("glue/"):
        return None
    from keras_effattn.data.glue import glue_task as lookup

    return lookup(dataset[5:])


def check_settings(settings):
    """Checks the flags that need no data; raises `common.UsageError` naming flag and fix.

    Runs before anything is written or read, so a typo costs nothing.

    Returns:
        The data source: the given ``--data_source``, or its default inside ``--data_dir``.
    """
    name = settings["dataset"]
    if name != "imdb" and not (name.startswith("glue/") and
                               name[5:].replace("-", "").lower() in GLUE_TASK_NAMES):
        raise common.UsageError(
            f"--dataset={name!r} is not supported; use imdb or glue/<task> with task in "
            f"{list(GLUE_TASK_NAMES)}."
        )
    depth = TINY_BACKBONE["num_layers"] if settings["backbone"] == "tiny" else None
    common.check_attention_spec(settings["attention"], num_layers=depth)
    if not settings["val_per_class"] and (
            settings["restore_best"] or settings["early_stopping_patience"] is not None):
        raise common.UsageError(
            "--restore_best and --early_stopping_patience watch the validation loss; "
            "add --val_per_class=N."
        )
    source = settings["data_source"]
    if source is None:
        root = common.data_dir(settings["data_dir"])
        return root / (common.IMDB_ARCHIVE if name == "imdb" else common.GLUE_FOLDER)
    if source != "tfds" and not pathlib.Path(source).exists():
        raise FileNotFoundError(
            f"--data_source {source!r} does not exist; pass the IMDB folder or "
            "aclImdb_v1.tar.gz, a GLUE folder holding <Task>/{train,dev}.tsv, or 'tfds'."
        )
    return source


def _read_size(settings):
    """Examples per class to read for training: the training and the validation examples."""
    if not settings["train_per_class"]:
        return 0  # all of them
    return settings["train_per_class"] + settings["val_per_class"]


def _subset(dataset, per_class, seed):
    """`per_class` examples of each class (of a regression task: in all); all when 0 or fewer."""
    from keras_effattn import data

    size = per_class * max(dataset.num_classes, 1)
    if not per_class or size >= len(dataset):
        return dataset
    return data.stratified_subset(dataset, size, seed, balanced=not dataset.is_regression)


def load_data(settings, source=None):
    """Train / evaluation / validation `TextDataset`s for the flags (`source`: see
    `check_settings`, which gives it when None)."""
    from keras_effattn import data

    source = check_settings(settings) if source is None else source
    seed = settings["seed"]
    task = glue_task(settings["dataset"])
    if task is None:
        train = data.read_imdb(source, "train", _read_size(settings) or None, seed=seed)
        evaluation = data.read_imdb(source, "test", settings["eval_per_class"] or None,
                                    seed=seed + 1)
    else:
        train = _subset(data.read_glue(task.name, source, "train"), _read_size(settings), seed)
        evaluation = _subset(data.read_glue(task.name, source, task.dev_splits[0]),
                             settings["eval_per_class"], seed)
    validation = None
    if settings["val_per_class"]:
        size = settings["val_per_class"] * max(train.num_classes, 1)
        train, validation = _hold_out(train, size, seed)
    return train, evaluation, validation


def _hold_out(dataset, size, seed):
    from keras_effattn import data

    if size >= len(dataset):
        raise common.UsageError(
            f"--val_per_class asks for {size} validation examples but only {len(dataset)} "
            "training examples were read; lower --val_per_class or raise --train_per_class."
        )
    fraction = size / len(dataset)
    train, validation = data.stratified_split(dataset, (1 - fraction, fraction), seed=seed)
    return train, validation


def build_config(settings):
    from keras_effattn.training import TrainConfig

    keys = ("dataset", "train_per_class", "eval_per_class", "val_per_class", "backbone",
            "attention", "max_length", "pooling", "dropout", "backbone_dropout",
            "head_hidden_dim")
    name = common.safe_name(settings["name"] or (
        f"{settings['dataset']}_{pathlib.Path(settings['backbone']).name}_"
        f"{settings['attention']}_L{settings['max_length']}"
    ))
    return TrainConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        eval_batch_size=settings["eval_batch_size"],
        learning_rate=settings["learning_rate"],
        optimizer=settings["optimizer"],
        schedule=settings["schedule"],
        warmup_ratio=settings["warmup_ratio"],
        weight_decay=settings["weight_decay"],
        clipnorm=settings["clipnorm"] or None,
        momentum=settings["momentum"],
        layer_decay=settings["layer_decay"],
        label_smoothing=settings["label_smoothing"],
        freeze_embeddings=settings["freeze_embeddings"],
        freeze_layers=settings["freeze_layers"],
        precision=settings["precision"],
        remat=settings["remat"],
        jit_compile=settings["xla"],
        strategy=settings["strategy"],
        seed=settings["seed"],
        save_every_n_steps=settings["save_every_n_steps"] or None,
        early_stopping_patience=settings["early_stopping_patience"],
        monitor="val_loss",
        restore_best=settings["restore_best"],
        energy=settings["energy"],
        country_iso_code=settings["country"],
        save_model=settings["save_model"],
        name=name,
        extra={k: settings[k] for k in keys},
    )


def model_builder(settings, num_classes):
    """A no-argument builder of the classifier (one output, a regressor, for ``num_classes=0``)."""
    from keras_effattn.models import build_classifier

    source = settings["backbone"]
    if source == "tiny":
        source = {**TINY_BACKBONE, "max_sequence_length": max(settings["max_length"], 32)}

    def build():
        return build_classifier(
            source,
            attention=settings["attention"],
            num_classes=num_classes or 1,
            max_length=settings["max_length"],
            dropout=settings["dropout"],
            pooling=settings["pooling"],
            hidden_dim=settings["head_hidden_dim"],
            backbone_dropout=settings["backbone_dropout"],
        )

    return build


def summary_table(results, folder):
    from keras_effattn.training import report

    ev, tr = results["evaluation"], results["training"]
    energy = results.get("energy") or {}
    if results.get("task") == "regression":
        quality = [
            ("pearson", f"{ev['pearson']:.4f} on {ev['num_examples']} held-out examples"),
            ("spearman", f"{ev['spearman']:.4f}"),
            ("RMSE", f"{ev['rmse']:.4f}"),
        ]
    else:
        quality = [
            ("accuracy", f"{ev['accuracy']:.4f} on {ev['num_examples']} held-out examples"),
            ("macro F1", f"{ev['macro_f1']:.4f}"),
        ]
    rows = [
        *quality,
        *[(k, f"{v:.4f}") for k, v in ev.get("task_metrics", {}).items()
          if k not in {name.lower() for name, _ in quality}],
        ("train", (f"{tr['num_examples']} examples x {tr['epochs_run']} epoch(s), "
                   f"{tr['train_seconds']:.0f} s, {tr['train_samples_per_s']:.1f} samples/s")),
        ("inference", (f"{ev['inference']['latency_ms_per_sample']:.1f} ms/sample, "
                       f"{ev['inference']['samples_per_s']:.1f} samples/s")),
        ("peak host RSS", f"{results['peak_host_rss_mb']:.0f} MB"),
        *report.energy_rows(energy, width=60),  # the figure and how it was obtained
        ("wall time", f"{results['wall_seconds']:.0f} s (this attempt)"),
        ("results", common.display_path(folder)),
    ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 62 + "+"
    out = [line] + [f"| {k:<{width}} | {v:<60} |" for k, v in rows] + [line]
    return "\n".join(out)


def run(settings, verbose=1):
    """Checks `settings` (the flag values by name), loads the data, trains and evaluates.

    Returns:
        ``(results, folder)``: the metrics dict and the run folder.
    """
    source = check_settings(settings)
    from keras_effattn.training import train_and_evaluate

    config = build_config(settings)
    train, evaluation, validation = load_data(settings, source)
    folder = common.output_dir(settings["output_dir"], "train", config.name)
    task_metrics = None
    task = glue_task(settings["dataset"])
    if task is not None:
        import functools

        from keras_effattn.training import glue_metrics

        task_metrics = functools.partial(glue_metrics, task.name)
    results = train_and_evaluate(
        config, model_builder(settings, train.num_classes), train, evaluation, folder,
        validation=validation, overwrite=settings["overwrite"], verbose=verbose,
        task_metrics=task_metrics,
    )
    return results, folder


def main(argv):
    del argv
    results, folder = run({name: FLAGS[name].value for name in FLAG_NAMES})
    print(summary_table(results, folder))
    return 0


if __name__ == "__main__":
    common.run(main)
