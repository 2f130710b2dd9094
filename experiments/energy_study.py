"""Energy study: what do mixed precision, gradient checkpointing, label smoothing, dropout, the
optimiser (Adam, AdamW, SGD with momentum) and a cosine schedule cost or save in energy, and what
do they do to accuracy?

Each row changes one training setting of the baseline (AdamW, linear decay, float32, no remat,
no label smoothing, the backbone's dropout) and trains the same IMDB classifier through the one
training engine, with CodeCarbon's offline tracker around training and evaluation. Reports test
accuracy, macro F1, validation loss (a held-out 20% of the training reviews), kWh, kg CO2 and
minutes, and draws the accuracy/energy trade-off in one chart.

Energy figures are CodeCarbon estimates (RAPL, NVML, or the CPU's TDP and a memory model when no
counter is readable, as on most shared or virtual CPUs); the grid intensity is
``--country_iso_code``'s. On a shared CPU other processes' load changes the figures; compare rows
of one run only.

Quick (a smoke test: tiny from-scratch model, 320 reviews, length 64, 1 epoch; minutes on 2 CPU
cores), writes runs/quick/energy/:

    python -m experiments.energy_study --quick

CPU tier (the published table: pretrained MiniLM-L6 with the main job's recipe on 2,000 training
reviews; float32, mixed_bfloat16, mixed_float16, remat, label smoothing 0.1, dropout 0.2, Adam,
SGD, cosine; about 5 minutes per row on 2 cores, more for the mixed rows where the CPU has no
bf16/fp16 units), writes runs/cpu/energy/ (``--publish``: results/cpu/energy/):

    python -m experiments.energy_study --tier=cpu

Full (GPU; MiniLM-L6, 5,000/5,000 reviews, 3 epochs, length 256, mixed_float16 row), writes
runs/full/energy/:

    python -m experiments.energy_study

Output: ``results.csv`` (one row per setting), ``summary.md``, ``tradeoff.png`` (accuracy vs
kWh), ``energy.png``, ``config.json`` and each run's folder under ``runs/``. Each row carries
every setting (its own overrides winning); re-running into the same folder with a changed
setting is refused before anything trains.
"""

import math

from absl import flags

from experiments import suite, sweep

suite.define_sweep_flags(imdb_training=True)  # --data_dir, --tier, ...; --backbone, --epochs, ...
flags.DEFINE_string("attention", "exact", "Attention spec used by every row.")
flags.DEFINE_string("settings", "baseline;mixed_precision;remat;label_smoothing;dropout;adam;"
                    "sgd;cosine", "';'-separated rows to run (see ROWS); the first is the "
                    "baseline the others are compared with.")
flags.DEFINE_string("mixed_policy", "mixed_float16", "Policy of the mixed_precision row.")
flags.DEFINE_string("country_iso_code", "USA", "Grid carbon intensity for CodeCarbon.")

QUICK = {
    "backbone": "tiny",
    "mixed_policy": "mixed_bfloat16",
    "epochs": 1,
    "learning_rate": 1e-3,
    "max_length": 64,
    "train_per_class": 160,
    "test_per_class": 64,
    "jit_compile": False,
}
# The main job's recipe (experiments.train: pretrained MiniLM-L6, lr 1e-4, one epoch, frozen token
# embedding, no XLA) on 2,000 training reviews (2,500 read, 20% held out for the validation
# loss) and 2,000 test reviews: float32 against both mixed policies, gradient checkpointing,
# label smoothing, dropout, Adam / SGD against the AdamW baseline, cosine against linear decay.
CPU = {
    **suite.MAIN_JOB_RECIPE,
    "settings": ("baseline;mixed_bfloat16;mixed_float16;remat;label_smoothing;dropout;adam;sgd;"
                 "cosine"),
    "train_per_class": 1250,
    "test_per_class": 1000,
}
PRESETS = {"quick": QUICK, "cpu": CPU}
NAMES = ("output_dir", "backbone", "attention", "settings", "mixed_policy", "epochs",
         "batch_size", "learning_rate", "max_length", "train_per_class", "test_per_class",
         "country_iso_code", "jit_compile", "freeze_embeddings", "seed")
QUESTION = "Which training settings save energy, and what do they cost in accuracy?"
NAME = "energy"
# Each row: (TrainConfig overrides, classifier overrides). "MIXED" and "LR*20" are resolved below.
ROWS = {
    "baseline": ({}, {}),
    "mixed_precision": ({"precision": "MIXED"}, {}),  # the --mixed_policy
    "mixed_bfloat16": ({"precision": "mixed_bfloat16"}, {}),
    "mixed_float16": ({"precision": "mixed_float16"}, {}),
    "remat": ({"remat": True}, {}),
    "label_smoothing": ({"label_smoothing": 0.1}, {}),
    "dropout": ({}, {"backbone_dropout": 0.2}),
    "adam": ({"optimizer": "adam", "weight_decay": 0.0}, {}),
    "adamw": ({"optimizer": "adamw"}, {}),
    "sgd": ({"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "learning_rate": "LR*20"},
            {}),
    "cosine": ({"schedule": "cosine"}, {}),
}


def train_overrides(name, settings):
    """The `TrainConfig` overrides of row `name` with placeholders resolved."""
    if name not in ROWS:
        raise ValueError(f"Unknown energy row {name!r}; choose from {sorted(ROWS)}.")
    overrides = dict(ROWS[name][0])
    if overrides.get("precision") == "MIXED":
        overrides["precision"] = settings["mixed_policy"]
    if overrides.get("learning_rate") == "LR*20":
        overrides["learning_rate"] = 20 * settings["learning_rate"]
    return overrides


def plan(settings):
    """Checks the row names and the attention spec and builds the rows (no reads or writes)."""
    names = suite.split_list(settings["settings"])
    suite.check_specs([settings["attention"]], suite.backbone_source(settings["backbone"]),
                      flag="--attention")
    shared = suite.row_settings(settings, ("settings",))
    return [{"run_id": name, "setting": name, **shared, **train_overrides(name, settings),
             **ROWS[name][1]} for name in names]


def run(settings, data_dir, overwrite=False):
    """Runs one training per row; returns the result rows."""
    from keras_effattn.data import read_imdb
    from keras_effattn.data.splits import stratified_split
    from keras_effattn.training.fit import TrainConfig

    rows = plan(settings)
    suite.prepare_sweep(settings, "energy_study", QUESTION, [(rows, "")], overwrite=overwrite)
    archive = data_dir / "aclImdb_v1.tar.gz"
    pool = read_imdb(archive, "train", max_per_class=settings["train_per_class"])
    train, validation = stratified_split(pool, (0.8, 0.2), seed=settings["seed"])
    test = read_imdb(archive, "test", max_per_class=settings["test_per_class"])
    source = suite.backbone_source(settings["backbone"])

    def run_one(row, run_dir):
        overrides = train_overrides(row["setting"], settings)
        base = {"epochs": settings["epochs"], "batch_size": settings["batch_size"],
                "learning_rate": settings["learning_rate"], "seed": settings["seed"],
                "jit_compile": settings["jit_compile"], "energy": True,
                "country_iso_code": settings["country_iso_code"], "tensorboard": False,
                "freeze_embeddings": settings["freeze_embeddings"],
                "save_model": False, "name": f"energy {row['setting']}",
                "extra": {"dataset": "imdb", "backbone": settings["backbone"],
                          "attention": settings["attention"], **ROWS[row["setting"]][1]}}
        config = TrainConfig(**{**base, **overrides})
        build = suite.classifier_builder(source, settings["attention"], settings["max_length"],
                                         **ROWS[row["setting"]][1])
        out = suite.train_row(config, build, train, test, run_dir, validation=validation)
        out["minutes"] = out["train_seconds"] / 60 if out["train_seconds"] is not None else None
        return out

    results = sweep.run_sweep(rows, run_one, settings["output_dir"],
                              columns=["run_id", "setting", *suite.ROW_COLUMNS])
    report(results, settings["output_dir"])
    return results


def compare_to_baseline(results):
    """Adds to each row its energy per accuracy point (kWh per percentage point of test
    accuracy) and its training time and energy relative to the first row (the baseline)."""
    base = results[0] if results else {}
    base_seconds = sweep.as_float(base.get("train_seconds"))
    base_kwh = sweep.as_float(base.get("energy_kwh"))
    for row in results:
        kwh, accuracy = sweep.as_float(row.get("energy_kwh")), sweep.as_float(row["accuracy"])
        row["kwh_per_accuracy_point"] = kwh / (100 * accuracy) if accuracy > 0 else math.nan
        row["time_vs_baseline"] = sweep.as_float(row.get("train_seconds")) / base_seconds
        row["energy_vs_baseline"] = kwh / base_kwh if base_kwh > 0 else math.nan
    return results


def report(results, out_dir):
    """Draws the trade-off chart and writes summary.md (one row per setting, with its energy
    per accuracy point, its time and energy relative to the baseline and how its energy was
    obtained; settings that trained slower than the baseline are named)."""
    from keras_effattn.utils import io

    results = compare_to_baseline([dict(r) for r in results])
    plt = suite._pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for row in results:
        kwh, accuracy = sweep.as_float(row.get("energy_kwh")), sweep.as_float(row["accuracy"])
        axis.scatter([kwh], [accuracy])
        axis.annotate(row["setting"], (kwh, accuracy), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set_xlabel("energy (kWh, CodeCarbon estimate)")
    axis.set_ylabel("test accuracy")
    axis.set_title("Accuracy / energy trade-off", fontsize=10)
    axis.grid(alpha=0.3)
    io.save_figure(figure, f"{out_dir}/tradeoff.png")
    suite.bar_chart([r["setting"] for r in results],
                    [sweep.as_float(r.get("energy_kwh")) for r in results],
                    f"{out_dir}/energy.png", "kWh (estimate)", "Energy per training run")
    columns = ["setting", "accuracy", "macro_f1", "validation_loss", "energy_kwh",
               "emissions_kg_co2", "kwh_per_accuracy_point", "minutes", "time_vs_baseline",
               "energy_vs_baseline", "peak_host_rss_mb", "energy_method"]
    slower = [f"`{r['setting']}` ({r['time_vs_baseline']:.2f}x)" for r in results[1:]
              if r["time_vs_baseline"] > 1.05]
    methods = sorted({str(r.get("energy_method")) for r in results})
    lines = [f"# {QUESTION}", "", f"One seed per row; `{results[0]['setting']}` is the baseline "
             "the ratios compare with." if results else "", "",
             "Energy was obtained as: " + "; ".join(methods) + ".", "",
             suite.conditions_note(out_dir, results), ""]
    if slower:
        lines += ["Trained more than 5% slower than the baseline on this machine: "
                  + ", ".join(slower) + ".", ""]
    io.write_text(f"{out_dir}/summary.md",
                  "\n".join(lines) + "\n" + suite.markdown_table(results, columns))


if __name__ == "__main__":
    suite.run_script(NAMES, PRESETS, NAME, run)
