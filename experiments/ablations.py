"""Ablations: how much do frozen layers, epochs, batch size, layer-wise LR decay, heads, hidden
size, the FAVOR+ feature count, the Linformer projected length k and the start of its
projections, and the hybrid layer pattern matter on IMDB?

Each group varies one setting of a common base run and keeps the rest: freezing the bottom
layers, epochs and batch size on the (pretrained) backbone; heads and hidden size on from-scratch
small models (the only way to vary them); FAVOR+ features, Linformer k and exact/FAVOR+ layer
patterns as attention specs. Every row trains through the one training engine.

Quick (a smoke test: tiny from-scratch model, 512 reviews, length 64, 2 epochs; about ten
minutes on 2 CPU cores; ``--groups=favor_features`` runs one group), writes
runs/quick/ablations/:

    python -m experiments.ablations --quick

CPU tier (the published table: pretrained MiniLM-L6, the main job's recipe, 2,000/2,000 reviews,
length 256; freezing, epochs, batch, layer-wise LR decay, FAVOR+ features, Linformer k and the
start of its projections (random vs segment means); 17 rows from 14 runs of 4-20 minutes on 2
cores, the base configuration trained once for the four groups that contain it), writes
runs/cpu/ablations/ (``--publish``: results/cpu/ablations/):

    python -m experiments.ablations --tier=cpu

Full (GPU; MiniLM-L6 and 4-layer from-scratch models, 5,000/5,000 reviews, length 256), writes
runs/full/ablations/:

    python -m experiments.ablations

Output: ``results.csv`` (group, value, metrics), ``summary.md``, one ``<group>.png`` per group
(accuracy and seconds per epoch against the value), ``config.json``, run folders under ``runs/``.
Each row carries every setting except the lists of values and groups (its own value overriding
the base setting it varies); re-running into the same folder with a changed setting is refused
before anything trains.
"""

import dataclasses
import json

from absl import flags

from experiments import suite, sweep

GROUPS = ("freeze", "epochs", "batch", "layer_decay", "heads", "hidden", "favor_features",
          "lowrank_k", "lowrank_init", "hybrid")
suite.define_sweep_flags()  # --data_dir, --output_dir, --seed, --tier, --publish, ...
flags.DEFINE_string("backbone", "minilm-l6", "Backbone of the non-architecture groups.")
flags.DEFINE_string("groups", "freeze;epochs;batch;heads;hidden;favor_features;lowrank_k;hybrid",
                    f"';'-separated groups to run, of: {', '.join(GROUPS)}.")
flags.DEFINE_string("freeze", "0;2;4", "Bottom layers frozen.")
flags.DEFINE_string("epochs_values", "1;3;5", "Epochs.")
flags.DEFINE_string("batch", "8;16;32", "Batch sizes.")
flags.DEFINE_string("layer_decay_values", "1.0;0.95", "Layer-wise LR decay factors (1.0: none).")
flags.DEFINE_string("heads", "4;8;16", "Heads of the from-scratch model.")
flags.DEFINE_string("hidden", "128;256;512", "Hidden sizes of the from-scratch model.")
flags.DEFINE_string("favor_features", "16;64;256", "FAVOR+ random features.")
flags.DEFINE_string("lowrank_k", "16;64;128", "Linformer projected lengths.")
flags.DEFINE_string("lowrank_init", "random;segment_mean",
                    "Linformer projection starts: 'random' (N(0, 1/k)) or 'segment_mean' "
                    "(means of contiguous segments, keeps the pretrained attention's positions).")
flags.DEFINE_integer("base_lowrank_k", 128, "Linformer k of the lowrank_init rows (with "
                     "max_length set to --max_length, so every slot receives keys).")
flags.DEFINE_string("hybrid", "exact*3,favor*3;favor*3,exact*3;alternate:exact,favor",
                    "';'-separated hybrid specs (features from --base_favor_features).")
flags.DEFINE_integer("scratch_layers", 4, "Layers of the from-scratch model (heads/hidden).")
flags.DEFINE_integer("scratch_hidden", 256, "Hidden size of the from-scratch model (heads).")
flags.DEFINE_integer("scratch_heads", 8, "Heads of the from-scratch model (hidden).")
flags.DEFINE_integer("base_favor_features", 64, "FAVOR+ features of the hybrid rows.")
flags.DEFINE_integer("epochs", 3, "Base epochs.")
flags.DEFINE_integer("batch_size", 16, "Base batch size.")
flags.DEFINE_float("learning_rate", 5e-5, "Learning rate (pretrained backbone).")
flags.DEFINE_float("scratch_learning_rate", 5e-4, "Learning rate of from-scratch models.")
flags.DEFINE_integer("max_length", 256, "Token sequence length.")
flags.DEFINE_integer("train_per_class", 2500, "Training reviews per class.")
flags.DEFINE_integer("test_per_class", 2500, "Test reviews per class.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the train and predict steps.")
flags.DEFINE_bool("freeze_embeddings", False, "Freeze the token embedding table (cheaper on CPU).")

QUICK = {
    "backbone": "tiny",
    "freeze": "0;1;2",
    "epochs_values": "1;3",
    "batch": "8;32",
    "heads": "2;8",
    "hidden": "32;128",
    "favor_features": "8;32",
    "lowrank_k": "8;32",
    "base_lowrank_k": 16,
    "hybrid": "exact,favor;favor,exact",
    "scratch_layers": 2,
    "scratch_hidden": 64,
    "scratch_heads": 4,
    "base_favor_features": 16,
    "epochs": 2,
    "learning_rate": 1e-3,
    "scratch_learning_rate": 1e-3,
    "max_length": 64,
    "train_per_class": 256,
    "test_per_class": 64,
    "jit_compile": False,
}
# The seed study's questions on the pretrained MiniLM-L6 with the main job's recipe (lr 1e-4, one
# epoch, frozen token embedding, no XLA), 2,000/2,000 reviews, length 256: freezing, epochs, batch
# size, layer-wise LR decay, FAVOR+ features, Linformer k and its projections' start (17 rows, 14
# runs: freeze 0, 1 epoch, batch 16 and decay 1.0 are one run, `same_runs`; the architecture
# groups need from-scratch models and stay in the quick / full tiers).
CPU = {
    **suite.MAIN_JOB_RECIPE,
    "groups": "freeze;epochs;batch;layer_decay;favor_features;lowrank_k;lowrank_init",
    "freeze": "0;2;4",
    "epochs_values": "1;2;3",
    "batch": "8;16;32",
    "layer_decay_values": "1.0;0.95",
    "favor_features": "64;256",
    "lowrank_k": "64;128",
    "batch_size": 16,
    "train_per_class": 1000,
    "test_per_class": 1000,
}
PRESETS = {"quick": QUICK, "cpu": CPU}
NAMES = ("output_dir", "backbone", "groups", "freeze", "epochs_values", "batch",
         "layer_decay_values", "heads",
         "hidden", "favor_features", "lowrank_k", "lowrank_init", "base_lowrank_k", "hybrid",
         "scratch_layers", "scratch_hidden",
         "scratch_heads", "base_favor_features", "epochs", "batch_size", "learning_rate",
         "scratch_learning_rate", "max_length", "train_per_class", "test_per_class",
         "jit_compile", "freeze_embeddings", "seed")
QUESTION = "Which settings matter: freezing, epochs, batch, heads, width, features, k, pattern?"
NAME = "ablations"
# The value lists (one row per value) and the group list: not carried by the rows.
VALUE_LISTS = ("groups", "freeze", "epochs_values", "batch", "layer_decay_values", "heads",
               "hidden", "favor_features", "lowrank_k", "lowrank_init", "hybrid")


def group_rows(group, settings):
    """The rows of one ablation group: (value, backbone source, attention, train overrides)."""
    scratch = {"num_layers": settings["scratch_layers"],
               "intermediate_dim": 4 * settings["scratch_hidden"]}
    base = suite.backbone_source(settings["backbone"])
    scratch_lr = {"learning_rate": settings["scratch_learning_rate"]}
    lr = {"learning_rate": settings["learning_rate"]}
    if group == "freeze":
        return [(v, base, "exact", {**lr, "freeze_layers": v})
                for v in suite.split_list(settings["freeze"], int)]
    if group == "epochs":
        return [(v, base, "exact", {**lr, "epochs": v})
                for v in suite.split_list(settings["epochs_values"], int)]
    if group == "batch":
        return [(v, base, "exact", {**lr, "batch_size": v})
                for v in suite.split_list(settings["batch"], int)]
    if group == "layer_decay":
        return [(v, base, "exact", {**lr, "layer_decay": v})
                for v in suite.split_list(settings["layer_decay_values"], float)]
    if group == "heads":
        return [(v, suite.backbone_source("tiny", {**scratch, "num_heads": v,
                                                   "hidden_dim": settings["scratch_hidden"]}),
                 "exact", scratch_lr) for v in suite.split_list(settings["heads"], int)]
    if group == "hidden":
        return [(v, suite.backbone_source("tiny", {"num_layers": settings["scratch_layers"],
                                                   "num_heads": settings["scratch_heads"],
                                                   "hidden_dim": v, "intermediate_dim": 4 * v}),
                 "exact", scratch_lr) for v in suite.split_list(settings["hidden"], int)]
    if group == "favor_features":
        return [(v, base, f"favor(num_features={v})", lr)
                for v in suite.split_list(settings["favor_features"], int)]
    if group == "lowrank_k":
        return [(v, base, f"lowrank(k={v})", lr)
                for v in suite.split_list(settings["lowrank_k"], int)]
    if group == "lowrank_init":
        inits = {"random": "", "segment_mean": ",projection_initializer=segment_mean"}
        values = suite.split_list(settings["lowrank_init"])
        unknown = sorted(set(values) - set(inits))
        if unknown:
            raise ValueError(f"--lowrank_init names {unknown}; choose from {sorted(inits)}.")
        k, length = settings["base_lowrank_k"], settings["max_length"]
        return [(v, base, f"lowrank(k={k},max_length={length}{inits[v]})", lr) for v in values]
    if group == "hybrid":
        options = {"favor": {"num_features": settings["base_favor_features"]}}
        return [(v, base, v, {**lr, "options": options})
                for v in suite.split_list(settings["hybrid"])]
    raise ValueError(f"Unknown ablation group {group!r}; choose from {GROUPS}.")


def plan(settings):
    """Checks the groups, values and specs and builds the rows (reads and writes nothing).

    Returns:
        ``(rows, specs)``: the rows, and run_id -> (backbone source, attention, overrides).
    """
    shared = suite.row_settings(settings, VALUE_LISTS)
    specs = {}
    rows = []
    for group in suite.split_list(settings["groups"]):
        for value, source, attention, overrides in group_rows(group, settings):
            suite.check_specs([attention], source, overrides.get("options"), flag=f"--{group}")
            run_id = sweep.run_id_of(group=group, value=value)
            specs[run_id] = (source, attention, overrides)
            rows.append({"run_id": run_id, "group": group, "value": str(value),
                         "attention": attention, **shared,
                         "backbone": source if isinstance(source, str) else "from-scratch",
                         **{k: v for k, v in overrides.items() if k != "options"}})
    return rows, specs


def train_config(settings, row, spec):
    """The engine's `TrainConfig` of one row (`spec`: its backbone source, attention and
    overrides from `plan`)."""
    from keras_effattn.training.fit import TrainConfig

    source, attention, overrides = spec
    overrides = dict(overrides)
    options = overrides.pop("options", None)
    return TrainConfig(
        **{"epochs": settings["epochs"], "batch_size": settings["batch_size"],
           "seed": settings["seed"], "jit_compile": settings["jit_compile"],
           "energy": False, "tensorboard": False, "save_model": False,
           "freeze_embeddings": settings["freeze_embeddings"], **overrides},
        name=f"ablation {row['group']}={row['value']}",
        extra={"dataset": "imdb", "backbone": source, "attention": attention,
               "options": options, "max_length": settings["max_length"]},
    )


def same_runs(settings, rows, specs):
    """run_id -> the earlier row that trains the very same configuration.

    The groups all vary one setting of a common base, so the base configuration appears once
    per group (freeze 0, 1 epoch, batch 16 and no layer-wise decay are the same run at the CPU
    tier): it is trained once and shared, not re-run with the same seed.
    """
    first = {}
    same = {}
    for row in rows:
        config = dataclasses.asdict(train_config(settings, row, specs[row["run_id"]]))
        config.pop("name")
        key = json.dumps(config, sort_keys=True, default=str)
        if key in first:
            same[row["run_id"]] = first[key]
        else:
            first[key] = row["run_id"]
    return same


def run(settings, data_dir, overwrite=False):
    """Runs every row of the chosen groups; returns the result rows."""
    from keras_effattn.data import read_imdb

    rows, specs = plan(settings)
    suite.prepare_sweep(settings, NAME, QUESTION, [(rows, "")], overwrite=overwrite)
    archive = data_dir / "aclImdb_v1.tar.gz"
    train = read_imdb(archive, "train", max_per_class=settings["train_per_class"])
    test = read_imdb(archive, "test", max_per_class=settings["test_per_class"])

    def run_one(row, run_dir):
        source, attention, _ = specs[row["run_id"]]
        config = train_config(settings, row, specs[row["run_id"]])
        build = suite.classifier_builder(source, attention, settings["max_length"],
                                         options=config.extra["options"])
        return suite.train_row(config, build, train, test, run_dir)

    results = sweep.run_sweep(rows, run_one, settings["output_dir"],
                              columns=["run_id", "group", "value", "attention"],
                              same_run_as=same_runs(settings, rows, specs))
    report(results, settings["output_dir"])
    return results


def report(results, out_dir):
    """One PNG per group (accuracy and s/epoch against the value) and summary.md."""
    from keras_effattn.utils import io

    plt = suite._pyplot()
    groups = []
    for row in results:
        if row["group"] not in groups:
            groups.append(row["group"])
    for group in groups:
        members = [r for r in results if r["group"] == group]
        labels = [r["value"] for r in members]
        figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        left.bar(range(len(labels)), [sweep.as_float(r["accuracy"]) for r in members])
        right.bar(range(len(labels)), [sweep.as_float(r["epoch_seconds"]) for r in members],
                  color="#dd8452")
        for axis, title in ((left, "test accuracy"), (right, "seconds per epoch")):
            axis.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
            axis.set_title(f"{group}: {title}", fontsize=9)
            axis.grid(axis="y", alpha=0.3)
        io.save_figure(figure, f"{out_dir}/{group}.png")
    columns = ["group", "value", "attention", "accuracy", "macro_f1", "eval_loss",
               "epoch_seconds", "peak_host_rss_mb", "trainable_params"]
    label = {r["run_id"]: f"{r['group']}={r['value']}" for r in results}
    shared = {}  # run_id of a trained run -> the rows that reuse it
    for r in results:
        if r.get("same_run_as"):
            shared.setdefault(r["same_run_as"], []).append(label[r["run_id"]])
    shared_note = "".join(f" {', '.join(rows)} reuse the {label[run]} run (same settings and "
                          "seed), not re-runs." for run, rows in shared.items())
    io.write_text(f"{out_dir}/summary.md", f"# {QUESTION}\n\nOne seed per row."
                  + shared_note + " " + suite.conditions_note(
                      out_dir, [r for r in results if not r.get("same_run_as")]) + "\n\n"
                  + suite.markdown_table(results, columns))


if __name__ == "__main__":
    suite.run_script(NAMES, PRESETS, NAME, run)
