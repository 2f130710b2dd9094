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
"""

import sys

from absl import app, flags

from experiments import common

_DEFINED_BEFORE = set(flags.FLAGS)
# --- data ---
flags.DEFINE_string("dataset", "imdb", "imdb, or glue/<task> for cola, sst2, mrpc, rte.")
flags.DEFINE_string("data_source", None,
                    "IMDB folder/.tar.gz, 'tfds', or a GLUE folder (default: in --data_dir).")
flags.DEFINE_integer("train_per_class", 2000, "Balanced training examples per class (0: all).")
flags.DEFINE_integer("eval_per_class", 1000, "Balanced held-out examples per class (0: all).")
flags.DEFINE_integer("val_per_class", 0, "Validation examples per class taken from the "
                     "training split (0: none); enables early stopping and --restore_best.")
# --- model ---
flags.DEFINE_string("backbone", "minilm-l6", "minilm-l6, a Hugging Face/KerasHub folder, a "
                    "KerasHub preset, or 'tiny' (a 2-layer random-init DistilBERT).")
flags.DEFINE_string("attention", "exact", "Attention spec, e.g. exact, "
                    "'exact*4,favor(num_features=128)*2', 'lowrank(k=64)'.")
flags.DEFINE_integer("max_length", 256, "Token sequence length (longer texts are truncated).")
flags.DEFINE_enum("pooling", "mean", ["mean", "cls"], "Sentence pooling of the classifier.")
flags.DEFINE_float("dropout", 0.1, "Classifier-head dropout.")
flags.DEFINE_float("backbone_dropout", None, "Override the backbone's dropout rate.")
flags.DEFINE_integer("head_hidden_dim", 0, "Hidden ReLU layer in the head (0: none, linear).")
# --- optimisation ---
flags.DEFINE_integer("epochs", 1, "Epochs.")
flags.DEFINE_integer("batch_size", 16, "Global batch size.")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch size.")
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.")
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
flags.DEFINE_enum("precision", "float32",
                  ["float32", "mixed_float16", "mixed_bfloat16", "auto"], "Precision policy.")
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
GLUE_SINGLE = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE"}


def load_data(settings):
    """Train / evaluation / validation `TextDataset`s for the flags."""
    from keras_effattn import data

    root = common.data_dir(settings["data_dir"])
    seed = settings["seed"]
    name = settings["dataset"]
    if name == "imdb":
        source = settings["data_source"] or root / common.IMDB_ARCHIVE
        per_class = settings["train_per_class"] + settings["val_per_class"]
        train = data.read_imdb(source, "train", per_class or None, seed=seed)
        evaluation = data.read_imdb(source, "test", settings["eval_per_class"] or None,
                                    seed=seed + 1)
    elif name.startswith("glue/") and name[5:] in GLUE_SINGLE:
        source = settings["data_source"] or root / common.GLUE_FOLDER
        task = GLUE_SINGLE[name[5:]]
        train = data.read_glue(task, source, "train")
        evaluation = data.read_glue(task, source, "dev")
        per_class = settings["train_per_class"] + settings["val_per_class"]
        if per_class and per_class * train.num_classes < len(train):
            train = data.stratified_subset(train, per_class * train.num_classes, seed, True)
        if settings["eval_per_class"] and settings["eval_per_class"] * 2 < len(evaluation):
            evaluation = data.stratified_subset(
                evaluation, settings["eval_per_class"] * 2, seed, True)
    else:
        raise ValueError(
            f"--dataset={name!r} is not supported; use imdb or glue/<task> with task in "
            f"{sorted(GLUE_SINGLE)}."
        )
    validation = None
    if settings["val_per_class"]:
        size = settings["val_per_class"] * train.num_classes
        train, validation = _hold_out(train, size, seed)
    return train, evaluation, validation


def _hold_out(dataset, size, seed):
    from keras_effattn import data

    fraction = size / len(dataset)
    train, validation = data.stratified_split(dataset, (1 - fraction, fraction), seed=seed)
    return train, validation


def build_config(settings):
    from keras_effattn.training import TrainConfig

    keys = ("dataset", "train_per_class", "eval_per_class", "val_per_class", "backbone",
            "attention", "max_length", "pooling", "dropout", "backbone_dropout",
            "head_hidden_dim")
    name = settings["name"] or (
        f"{settings['dataset'].replace('/', '-')}_{settings['backbone']}_"
        f"{settings['attention']}_L{settings['max_length']}".replace(" ", "")
    )
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
    from keras_effattn.models import build_classifier

    source = settings["backbone"]
    if source == "tiny":
        source = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
                  "max_sequence_length": max(settings["max_length"], 32)}

    def build():
        return build_classifier(
            source,
            attention=settings["attention"],
            num_classes=num_classes,
            max_length=settings["max_length"],
            dropout=settings["dropout"],
            pooling=settings["pooling"],
            hidden_dim=settings["head_hidden_dim"],
            backbone_dropout=settings["backbone_dropout"],
        )

    return build


def summary_table(results, folder):
    ev, tr = results["evaluation"], results["training"]
    energy = results.get("energy") or {}
    rows = [
        ("accuracy", f"{ev['accuracy']:.4f} on {ev['num_examples']} held-out examples"),
        ("macro F1", f"{ev['macro_f1']:.4f}"),
        *[(k, f"{v:.4f}") for k, v in ev.get("task_metrics", {}).items()],
        ("train", f"{tr['num_examples']} examples x {tr['epochs_run']} epoch(s), "
                  f"{tr['train_seconds']:.0f} s, {tr['train_samples_per_s']:.1f} samples/s"),
        ("inference", f"{ev['inference']['latency_ms_per_sample']:.1f} ms/sample, "
                      f"{ev['inference']['samples_per_s']:.1f} samples/s"),
        ("peak host RSS", f"{results['peak_host_rss_mb']:.0f} MB"),
        ("energy", f"{energy['energy_kwh']:.4f} kWh, {energy['emissions_kg_co2']:.4f} kg CO2 "
                   f"({energy['country_iso_code']})" if energy.get("available")
         else f"not measured ({energy.get('reason')})"),
        ("wall time", f"{results['wall_seconds']:.0f} s (this attempt)"),
        ("results", common.display_path(folder)),
    ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 62 + "+"
    out = [line] + [f"| {k:<{width}} | {v:<60} |" for k, v in rows] + [line]
    return "\n".join(out)


def main(argv):
    del argv
    settings = {name: FLAGS[name].value for name in FLAG_NAMES}
    from keras_effattn.training import train_and_evaluate

    config = build_config(settings)
    train, evaluation, validation = load_data(settings)
    folder = common.output_dir(settings["output_dir"], "train", config.name)
    task_metrics = None
    if settings["dataset"].startswith("glue/"):
        import functools

        from keras_effattn.training import glue_metrics

        task_metrics = functools.partial(glue_metrics, settings["dataset"][5:])
    results = train_and_evaluate(
        config, model_builder(settings, train.num_classes), train, evaluation, folder,
        validation=validation, overwrite=settings["overwrite"], verbose=1,
        task_metrics=task_metrics,
    )
    print(summary_table(results, folder))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
