"""Error and attention analysis on IMDB: where does the classifier fail, and what does it attend to?

1. Dataset EDA: class balance, word and WordPiece-token length histograms and the truncation rate
   at ``--max_length`` for the IMDB train and test samples and a GLUE task
   (`keras_effattn.data.stats`).
2. Trains one classifier through the one training engine (its run folder, with ``model.keras``,
   goes to ``--work_dir``, by default ``runs/<tier>/analysis_model/``, outside the committed
   results) and reads back its test predictions:
   confusion matrix and per-class precision/recall/F1.
3. Failure cases: the misclassified reviews with their length and negation counts, compared with
   the correctly classified ones (mean words, share containing a negation, negations per 100
   words, and the error rate by length quartile).
4. Attention visualisation for chosen reviews (the first misclassified and the first correct
   test review, or ``--texts``): a per-token bar chart of the attention each token receives in
   the top layer (averaged over heads and real query positions) and a per-layer heatmap of the
   head-averaged attention matrix (`keras_effattn.models.attention_maps`).

Quick (a smoke test: tiny from-scratch model, 512 training reviews, length 64; a few minutes on
2 CPU cores), writes runs/quick/analysis/:

    python -m experiments.analysis --quick

CPU tier (the main job's model and recipe: pretrained MiniLM-L6, 4,000 training reviews, one
epoch; 2,000 test reviews; about 10 minutes on 2 cores), writes runs/cpu/analysis/ and
runs/cpu/analysis_model/ (``--publish``: results/cpu/analysis/):

    python -m experiments.analysis --tier=cpu

Full (GPU; MiniLM-L6 fine-tuned 3 epochs on the 5,000/5,000 subset at length 256), writes
runs/full/analysis/ and the model's run folder runs/full/analysis_model/:

    python -m experiments.analysis

Output (``--output_dir``): ``eda_*.png``, ``eda.json``, ``eda.md``, ``confusion_matrix.png``,
``per_class.csv``, ``failure_cases.csv`` (misclassified reviews, excerpted), ``failure_stats.json``,
``error_by_length.png``, ``attention_tokens_<i>.png``, ``attention_layers_<i>.png``,
``summary.md``, ``config.json``.
"""

from absl import flags

from experiments import common, suite
from experiments.failures import error_rate_by_truncation, failure_statistics, negation_count

suite.define_sweep_flags(imdb_training=True)  # --data_dir, --tier, ...; --backbone, --epochs, ...
flags.DEFINE_string("work_dir", None, "Engine run folder, holds model.keras (default: "
                    "runs/<tier>/analysis_model in the repository).")
flags.DEFINE_string("attention", "exact", "Attention spec of the analysed model.")
flags.DEFINE_string("glue_task", "SST-2", "GLUE task for the EDA plot ('' to skip).")
flags.DEFINE_integer("attention_max_length", 48, "Tokens shown in the attention plots.")
flags.DEFINE_string("texts", "", "'||'-separated texts to visualise instead of chosen reviews.")
flags.DEFINE_integer("max_failures", 50, "Misclassified reviews written to failure_cases.csv.")

QUICK = {
    "backbone": "tiny",
    "epochs": 3,
    "learning_rate": 1e-3,
    "max_length": 64,
    "train_per_class": 256,
    "test_per_class": 128,
    "attention_max_length": 32,
    "max_failures": 30,
    "jit_compile": False,
}
# The main job's model (experiments.train's defaults: pretrained MiniLM-L6, fused exact attention,
# 4,000 training reviews, one epoch, lr 1e-4, frozen token embedding, no XLA), analysed on 2,000
# test reviews.
CPU = {
    **suite.MAIN_JOB_RECIPE,
    "attention": "exact",
    "train_per_class": 2000,
    "test_per_class": 1000,
}
PRESETS = {"quick": QUICK, "cpu": CPU}
NAMES = ("output_dir", "work_dir", "backbone", "attention", "epochs", "batch_size",
         "learning_rate", "max_length", "train_per_class", "test_per_class", "glue_task",
         "attention_max_length", "texts", "max_failures", "jit_compile", "freeze_embeddings",
         "seed")
QUESTION = "Where does the IMDB classifier fail, and what does it attend to?"
NAME = "analysis"


def eda(settings, data_dir, train, test, out_dir):
    """Dataset statistics and plots of the IMDB samples and the GLUE task."""
    from keras_effattn.data import read_glue
    from keras_effattn.data.stats import format_statistics, plot_statistics
    from keras_effattn.models import tokenizer_for
    from keras_effattn.utils import io

    tokenizer = tokenizer_for("minilm-l6")
    sets = [("imdb_train", train), ("imdb_test", test)]
    if settings["glue_task"]:
        sets.append((f"glue_{settings['glue_task']}",
                     read_glue(settings["glue_task"], data_dir / "glue", "dev")))
    out = {}
    for name, data in sets:
        out[name] = plot_statistics(data, f"{out_dir}/eda_{name}.png", tokenizer=tokenizer,
                                    max_length=settings["max_length"])
    io.write_json(f"{out_dir}/eda.json", out)
    io.write_text(f"{out_dir}/eda.md", "\n".join(format_statistics(s) for s in out.values()))
    return out


def plot_attention(maps, tokens, index, out_dir, title):
    """Per-token bar chart (top layer) and per-layer heatmaps for one text."""
    import numpy as np

    from keras_effattn.utils import io

    plt = suite._pyplot()
    real = maps["padding_mask"][index]
    count = int(real.sum())
    labels = tokens[:count]
    top = maps["maps"][-1][index].mean(axis=0)[:count, :count]  # heads averaged
    received = top.mean(axis=0)
    figure, axis = plt.subplots(figsize=(max(6, 0.28 * count), 3.2))
    axis.bar(range(count), received)
    axis.set_xticks(range(count), labels, rotation=90, fontsize=7)
    axis.set_ylabel("mean attention received")
    axis.set_title(f"{title}: top layer ({maps['kinds'][-1]})", fontsize=9)
    io.save_figure(figure, f"{out_dir}/attention_tokens_{index}.png")
    layers = len(maps["maps"])
    figure, axes = plt.subplots(1, layers, figsize=(3.6 * layers, 3.6), squeeze=False)
    for layer, axis in enumerate(axes[0]):
        matrix = maps["maps"][layer][index].mean(axis=0)[:count, :count]
        axis.imshow(matrix, cmap="viridis", vmin=0.0, vmax=float(np.max(matrix)) or 1.0)
        axis.set_title(f"layer {layer} ({maps['kinds'][layer]})", fontsize=8)
        step = max(1, count // 16)
        axis.set_xticks(range(0, count, step), labels[::step], rotation=90, fontsize=6)
        axis.set_yticks(range(0, count, step), labels[::step], fontsize=6)
    figure.suptitle(f"{title}: head-averaged attention per layer", fontsize=9)
    io.save_figure(figure, f"{out_dir}/attention_layers_{index}.png")


def run(settings, data_dir, overwrite=False):
    """Runs the four parts; returns the failure statistics.

    With `overwrite`, the output folder and the model's run folder (`work_dir`) are replaced,
    but only when they are folders this library made (or empty); anything else is refused.
    """
    import numpy as np

    from keras_effattn.data import read_imdb
    from keras_effattn.models import attention_maps
    from keras_effattn.training import report as report_lib
    from keras_effattn.training.evaluate import classification_metrics
    from keras_effattn.training.fit import TrainConfig
    from keras_effattn.utils import io

    out_dir = settings["output_dir"]
    source = suite.backbone_source(settings["backbone"])
    suite.check_specs([settings["attention"]], source, flag="--attention")
    if settings["work_dir"] is None:
        settings = {**settings, "work_dir": str(suite.default_output_dir(
            "analysis_model", settings["tier"]))}
    suite.prepare_sweep(settings, NAME, QUESTION, [], overwrite=overwrite)
    if overwrite:
        io.remove_owned_folder(settings["work_dir"], kinds=("run",))
    archive = data_dir / "aclImdb_v1.tar.gz"
    train = read_imdb(archive, "train", max_per_class=settings["train_per_class"])
    test = read_imdb(archive, "test", max_per_class=settings["test_per_class"])
    eda(settings, data_dir, train, test, out_dir)

    config = TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], seed=settings["seed"],
        jit_compile=settings["jit_compile"], energy=False, tensorboard=False, save_model=True,
        freeze_embeddings=settings["freeze_embeddings"],
        name="analysis", extra={"dataset": "imdb", "backbone": settings["backbone"],
                                "attention": settings["attention"],
                                "max_length": settings["max_length"]})
    build = suite.classifier_builder(source, settings["attention"], settings["max_length"])
    suite.train_row(config, build, train, test, settings["work_dir"])
    predictions = np.asarray(suite.predictions_of(settings["work_dir"]))

    metrics = classification_metrics(test.labels, predictions, test.class_names)
    report_lib.plot_confusion_matrix(metrics["confusion_matrix"], list(test.class_names),
                                     f"{out_dir}/confusion_matrix.png",
                                     title=f"IMDB test ({len(test)} reviews)")
    io.write_csv(f"{out_dir}/per_class.csv",
                 [{"class": k, **v} for k, v in metrics["per_class"].items()])
    model = common.load_model(f"{settings['work_dir']}/model.keras")
    failures = failure_statistics(test.texts, test.labels, predictions)
    failures["accuracy"] = metrics["accuracy"]
    tokenizer = model.preprocessor.tokenizer
    token_counts = [len(ids) for ids in tokenizer(list(test.texts))]
    failures["error_rate_by_truncation"] = error_rate_by_truncation(
        test.labels, predictions, token_counts, settings["max_length"])
    io.write_json(f"{out_dir}/failure_stats.json", failures)
    wrong = np.flatnonzero(predictions != test.labels)
    # The most confident errors first: the model's probability of the label it wrongly chose.
    confidence = np.zeros(len(test.texts))
    if wrong.size:
        logits = np.asarray(model.predict([test.texts[i] for i in wrong], batch_size=32,
                                          verbose=0), dtype=np.float64)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        confidence[wrong] = probabilities.max(-1)
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    io.write_csv(f"{out_dir}/failure_cases.csv", [
        {"index": int(i), "true": test.class_names[test.labels[i]],
         "predicted": test.class_names[predictions[i]],
         "confidence": round(float(confidence[i]), 4), "words": len(test.texts[i].split()),
         "tokens": token_counts[i], "negations": negation_count(test.texts[i]),
         "excerpt": test.texts[i][:300]}
        for i in wrong[: settings["max_failures"]]])
    rates = failures["error_rate_by_length_quartile"]
    suite.bar_chart([f"Q{q + 1}" for q in range(4)],
                    [r if r is not None else float("nan") for r in rates["rates"]],
                    f"{out_dir}/error_by_length.png", "error rate",
                    "Test error rate by review-length quartile")

    if settings["texts"]:
        texts = suite.split_list(settings["texts"], sep="||")
        titles = [f"text {i}" for i in range(len(texts))]
    else:
        right = np.flatnonzero(predictions == test.labels)
        chosen = [(int(wrong[0]), "misclassified")] if wrong.size else []
        chosen += [(int(right[0]), "correct")] if right.size else []
        texts = [test.texts[i] for i, _ in chosen]
        titles = [f"test review {i} ({kind})" for i, kind in chosen]
    maps = attention_maps(model, texts, max_length=settings["attention_max_length"])
    vocabulary = model.preprocessor.tokenizer
    for index, title in enumerate(titles):
        tokens = [vocabulary.id_to_token(int(t)) for t in maps["token_ids"][index]]
        plot_attention(maps, tokens, index, out_dir, title)
    write_summary(out_dir, metrics, failures, titles)
    return failures


def write_summary(out_dir, metrics, failures, titles):
    from keras_effattn.utils import io

    per_class = [{"class": k, **v} for k, v in metrics["per_class"].items()]
    groups = [{"group": k, **failures[k]} for k in ("errors", "correct")]
    text = (
        f"# {QUESTION}\n\nTest accuracy {metrics['accuracy']:.4f} on "
        f"{metrics['num_examples']} reviews.\n\n## Per class\n\n"
        + suite.markdown_table(per_class, ["class", "precision", "recall", "f1", "support"])
        + "\n## Misclassified vs correct\n\n"
        + suite.markdown_table(groups, ["group", "count", "mean_words", "share_with_negation",
                                        "negations_per_100_words"])
        + "\nError rate by length quartile (Q1 shortest): "
        + ", ".join("n/a" if r is None else f"{r:.3f}"
                    for r in failures["error_rate_by_length_quartile"]["rates"])
        + "\n\nError rate by truncation: " + ", ".join(
            f"{name} {entry['error_rate']:.3f} ({entry['count']} reviews)"
            if entry["error_rate"] is not None else f"{name} n/a (0 reviews)"
            for name, entry in failures["error_rate_by_truncation"].items())
        + " (truncated: longer than the model's length).\n\nMost confident errors: "
        "`failure_cases.csv` (sorted by the model's probability of its wrong label)."
        + "\n\nAttention plots: " + "; ".join(
            f"`attention_tokens_{i}.png`/`attention_layers_{i}.png` ({t})"
            for i, t in enumerate(titles)) + ".\n"
    )
    io.write_text(f"{out_dir}/summary.md", text)


if __name__ == "__main__":
    suite.run_script(NAMES, PRESETS, NAME, run)
