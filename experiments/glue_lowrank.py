"""Low-rank attention on GLUE and WikiText: does rank-16 attention keep the standard model's GLUE
scores and masked-LM perplexity, and what does it save at inference?

Part 1 fine-tunes the standard model (stock Keras attention) and each low-rank variant on the
GLUE tasks in ``../shared/data/glue`` (CoLA, SST-2, and the text-pair tasks MRPC, RTE and STS-B)
through the one training engine, and scores the dev set with each task's GLUE metric (Matthews
correlation for CoLA, F1 and accuracy for MRPC, Pearson and Spearman correlation for STS-B,
accuracy otherwise), plus inference peak memory and per-sample inference time. Pairs are packed
as ``[CLS] a [SEP] b [SEP]`` by the model's preprocessor; STS-B is a regression task (scores in
[0, 5]) and trains a one-output model on mean squared error. Variants:
``lowrank(k=none,qkv_rank=16)`` factorises each Q/K/V projection through rank 16 (no sequence
projection; initialised by truncated SVD from a pretrained backbone) and ``lowrank(k=16)`` is
Linformer with keys/values projected to 16 positions.

Part 2 is masked-LM perplexity on WikiText-2, ``exp(mean masked-token cross-entropy)`` over
whole-word masks (`keras_effattn.data.masking`: every WordPiece of a chosen word is predicted).
The MiniLM checkpoint has no masked-LM head, so a variant trained from it would be scored mostly
on how far its head got. Instead the standard model (the first variant) is first adapted: head
and encoder trained for ``--mlm_adapt_epochs`` and saved. Each variant then starts from that
model with its attention swapped in (low-rank factors by SVD of the adapted projections) and
continues for ``--mlm_epochs`` on the same masks, in the same order, under the same schedule:
the same budget for all, the standard model included. A zero-shot row per efficient variant
scores the swap before any training. Offline, the shared copy has no WikiText-2 train split, so
training uses the **valid** split and evaluation the **test** split: these perplexities are not
comparable with published numbers (`keras_effattn.data.wikitext`). The evaluation masks are
seeded, cached in ``wikitext/eval_masks_<key>.npz`` and shared by every row (also across resumed
runs); the cache is keyed by everything that shapes them (backbone, max_length, chunk words and
count, seed, masking and a hash of the evaluation text), so masks made with other settings are
never reused. ``--noglue`` runs this part alone, ``--noperplexity`` the GLUE part alone.

Each row carries every setting that affects it (the GLUE rows the GLUE settings, the WikiText
rows the masked-LM settings); re-running into the same folder with a changed setting is refused
before anything trains (``--overwrite`` or a new ``--output_dir`` starts afresh).

Quick (tiny from-scratch models, 256 examples per task, length 64, 1 epoch; WikiText on 256
chunks; minutes on 2 CPU cores), writes runs/quick/glue_lowrank/ (``--publish``: the tracked
results/glue_lowrank/):

    python -m experiments.glue_lowrank --quick

CPU tier (the pretrained MiniLM-L6 on 2 CPU cores: stock, rank-16 Q/K/V and Linformer k=64 on
the full train splits of RTE, MRPC, STS-B and CoLA and a stratified 8,000-sentence SST-2 subset
(``--train_caps``), length 128, 3 epochs, full dev sets, plus the zero-shot row of each task: its
fine-tuned stock model with rank-16 factors swapped in by SVD and no further training
(``--zero_shot``; models are not kept in git, so where the stock row is finished but its model
is gone the zero-shot row trains it again, with the same settings, in its own ``baseline/``
folder and reports that model's score as ``baseline_retrained_glue_score``); WikiText: all of
valid, all of test, 3 adaptation epochs and 1 more per variant at lr 1e-4), writes runs/cpu/glue_lowrank/; each part alone:

    python -m experiments.glue_lowrank --tier=cpu --noglue        # WikiText perplexity
    python -m experiments.glue_lowrank --tier=cpu --noperplexity  # GLUE

Full (GPU; MiniLM-L6, rank 16, lr 2e-5, batch 16, 3 epochs, length 128, weight decay 0.01, full
train/dev sets; WikiText valid -> test), writes runs/full/glue_lowrank/:

    python -m experiments.glue_lowrank

Output: ``results.csv`` (task x variant: metrics, inference ms/sample, inference peak memory),
``perplexity.csv``, ``summary.md``, ``glue_scores.png``, ``perplexity.png``, ``config.json``, run
folders under ``runs/``.
"""

import hashlib
import json
import math
import pathlib

from absl import flags

from experiments import common, suite, sweep

suite.define_sweep_flags()  # --data_dir, --output_dir, --seed, --tier, --publish, ...
flags.DEFINE_string("backbone", "minilm-l6", "'minilm-l6', 'tiny' (from scratch) or a folder.")
flags.DEFINE_string("variants", "keras;lowrank(k=none,qkv_rank=16);lowrank(k=16)",
                    "';'-separated attention specs; the first is the standard model.")
flags.DEFINE_string("tasks", "CoLA;SST-2;MRPC;RTE;STS-B",
                    "';'-separated GLUE tasks (classification, or STS-B regression).")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-5, "Peak learning rate (AdamW, linear decay).")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay.")
flags.DEFINE_integer("max_length", 128, "Token sequence length.")
flags.DEFINE_integer("train_examples", 0, "Training examples per task (0: all).")
flags.DEFINE_string("train_caps", "", "Per-task training caps overriding --train_examples, "
                    "e.g. 'SST-2=8000' (a stratified subset).")
flags.DEFINE_string("zero_shot", "", "An attention spec swapped into each task's fine-tuned "
                    "baseline without further training (e.g. 'lowrank(k=none,qkv_rank=16)'): "
                    "what the swap alone keeps. '' skips it.")
flags.DEFINE_integer("dev_examples", 0, "Dev examples per task (0: all).")
flags.DEFINE_bool("glue", True, "Run the GLUE part.")
flags.DEFINE_bool("perplexity", True, "Run the WikiText masked-LM part.")
flags.DEFINE_integer("mlm_max_words", 96, "Words per WikiText chunk (fits max_length tokens).")
flags.DEFINE_integer("mlm_train_chunks", 0, "WikiText training chunks (0: all of valid).")
flags.DEFINE_integer("mlm_eval_chunks", 0, "WikiText evaluation chunks (0: all of test).")
flags.DEFINE_integer("mlm_adapt_epochs", 3, "Masked-LM epochs adapting the head and encoder "
                     "with the standard attention, before any swap.")
flags.DEFINE_integer("mlm_epochs", 3, "Masked-LM epochs each variant continues from the adapted "
                     "model (the same budget for all).")
flags.DEFINE_float("mlm_learning_rate", 5e-5, "Masked-LM peak learning rate.")
flags.DEFINE_string("precision", "float32", "float32, mixed_float16, mixed_bfloat16 or auto.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the train and predict steps.")

QUICK = {
    "backbone": "tiny",
    "epochs": 1,
    "learning_rate": 1e-3,
    "max_length": 64,
    "train_examples": 256,
    "dev_examples": 128,
    "mlm_max_words": 40,
    "mlm_train_chunks": 256,
    "mlm_eval_chunks": 128,
    "mlm_adapt_epochs": 1,
    "mlm_epochs": 1,
    "mlm_learning_rate": 1e-3,
    "jit_compile": False,
}
# The pretrained model on 2 CPU cores: the variants on the full train splits of RTE,
# MRPC, STS-B and CoLA and a stratified 8,000-sentence SST-2 subset, length 128, full dev
# sets, and the zero-shot rank-16 swap of each fine-tuned baseline. WikiText: all of valid to
# train, all of test to score; 3 epochs adapting the standard model, 1 more per variant.
CPU = {
    "backbone": "minilm-l6",
    "variants": "keras;lowrank(k=none,qkv_rank=16);lowrank(k=64)",
    "tasks": "RTE;MRPC;STS-B;CoLA;SST-2",
    "epochs": 3,
    "learning_rate": 5e-5,
    "max_length": 128,
    "train_caps": "SST-2=8000",
    "zero_shot": "lowrank(k=none,qkv_rank=16)",
    "jit_compile": False,
    "mlm_adapt_epochs": 3,
    "mlm_epochs": 1,
    "mlm_learning_rate": 1e-4,
}
NAMES = ("output_dir", "backbone", "variants", "tasks", "epochs", "batch_size", "learning_rate",
         "weight_decay", "max_length", "train_examples", "train_caps", "zero_shot",
         "dev_examples", "glue", "perplexity",
         "mlm_max_words", "mlm_train_chunks", "mlm_eval_chunks", "mlm_adapt_epochs", "mlm_epochs",
         "mlm_learning_rate", "precision", "jit_compile", "seed")
QUESTION = "Does rank-16 attention keep GLUE scores and masked-LM perplexity, and save inference?"
NAME = "glue_lowrank"
# Settings that do not affect a part's rows (besides the variant and task lists).
NOT_GLUE = ("variants", "tasks", "glue", "perplexity", "mlm_max_words", "mlm_train_chunks",
            "mlm_eval_chunks", "mlm_adapt_epochs", "mlm_epochs", "mlm_learning_rate")
NOT_MLM = ("variants", "tasks", "glue", "perplexity", "epochs", "learning_rate", "train_examples",
           "train_caps", "zero_shot", "dev_examples")
# Settings that shape the evaluation masks (with a hash of the evaluation text).
MASK_KEY = ("backbone", "max_length", "mlm_max_words", "mlm_eval_chunks", "seed")


def plan(settings):
    """Checks tasks and variants and builds both parts' rows (reads and writes nothing).

    Returns:
        ``(variants, glue_rows, mlm_rows)`` (`glue_rows` empty with ``glue`` False,
        `mlm_rows` empty without ``perplexity``).
    """
    from keras_effattn.data import glue_task

    variants = suite.split_list(settings["variants"])
    source = suite.backbone_source(settings["backbone"])
    suite.check_specs(variants, source)
    tasks = [glue_task(t).name for t in suite.split_list(settings["tasks"])]
    zero = settings.get("zero_shot") or ""
    if zero:
        suite.check_specs([zero], source, flag="--zero_shot")
    caps = train_caps(settings)
    unknown = sorted(set(caps) - set(tasks))
    if unknown:
        raise ValueError(f"--train_caps names {unknown}, which are not in --tasks={tasks}.")
    glue_shared = suite.row_settings(settings, (*NOT_GLUE, "train_caps", "zero_shot"))
    glue_rows = []
    for task in tasks:
        task_shared = {**glue_shared, "train_examples": caps.get(task,
                                                                 settings["train_examples"])}
        glue_rows += [{"run_id": sweep.run_id_of(task=task, v=i), "task": task,
                       "variant": variant, **task_shared} for i, variant in enumerate(variants)]
        if zero:
            glue_rows.append({"run_id": sweep.run_id_of(task=task, v="zero_shot"), "task": task,
                              "variant": f"zero-shot {zero}",
                              "zero_shot_of": variants[0], **task_shared})
    if not settings.get("glue", True):
        glue_rows = []
    mlm_rows = []
    if settings["perplexity"]:
        mlm_shared = suite.row_settings(settings, NOT_MLM)
        # The standard model is adapted first; the swaps without training are cheap and come
        # next, then the continuations (each with the same budget).
        mlm_rows.append({"run_id": sweep.run_id_of(mlm="adapt"), "stage": "adapt",
                         "variant": variants[0], **mlm_shared})
        mlm_rows += [{"run_id": sweep.run_id_of(mlm=f"zero_shot_{i}"), "stage": "zero-shot",
                      "variant": variant, **mlm_shared}
                     for i, variant in enumerate(variants) if i > 0]
        mlm_rows += [{"run_id": sweep.run_id_of(mlm=i), "stage": "continue", "variant": variant,
                      **mlm_shared} for i, variant in enumerate(variants)]
    return variants, glue_rows, mlm_rows


def train_caps(settings):
    """``--train_caps`` ('SST-2=8000;...') as {canonical task name: int}."""
    from keras_effattn.data import glue_task

    caps = {}
    text = settings.get("train_caps") or ""
    for entry in suite.split_list(text) if text.strip() else []:
        name, _, value = entry.partition("=")
        if not value.isdigit():
            raise ValueError(f"--train_caps entry {entry!r} is not TASK=COUNT, e.g. SST-2=8000.")
        caps[glue_task(name.strip()).name] = int(value)
    return caps


def load_task(task, settings, data_dir):
    """Train and dev `TextDataset`s of a GLUE task (seeded subsets, stratified by class or, for
    STS-B, by score bin)."""
    from keras_effattn.data import glue_task, read_glue
    from keras_effattn.data.splits import stratified_subset

    spec = glue_task(task)
    train_size = train_caps(settings).get(spec.name, settings["train_examples"])
    parts = []
    for split, size in (("train", train_size), ("dev", settings["dev_examples"])):
        data = read_glue(spec.name, data_dir / "glue", split)
        if size and size < len(data):
            data = stratified_subset(data, size, seed=settings["seed"])
        parts.append(data)
    return spec, parts[0], parts[1]


def run_glue(settings, data_dir, rows, source):
    """Part 1: one engine run per (task, variant) row of `plan`; rows carry the task's GLUE
    metrics."""
    import numpy as np

    from keras_effattn.training.fit import TrainConfig

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    variants = list(dict.fromkeys(row["variant"] for row in rows if not row.get("zero_shot_of")))
    data = [load_task(t, settings, data_dir) for t in tasks]
    by_name = {spec.name: (spec, train, dev) for spec, train, dev in data}

    baseline_dirs = {}

    def train_one(task, variant, run_dir):
        spec, train, dev = by_name[task]
        config = TrainConfig(
            epochs=settings["epochs"], batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"],
            precision=settings["precision"], jit_compile=settings["jit_compile"],
            seed=settings["seed"], energy=False, tensorboard=False,
            # The baseline's model is what the zero-shot row swaps attention into.
            save_model=bool(settings.get("zero_shot")) and variant == variants[0],
            name=f"glue {spec.name} {variant}",
            extra={"dataset": f"glue/{spec.name}", "backbone": settings["backbone"],
                   "attention": variant, "max_length": settings["max_length"]},
        )
        build = suite.classifier_builder(source, variant, settings["max_length"],
                                         num_classes=spec_classes(spec))
        out = suite.train_row(config, build, train, dev, run_dir)
        predictions = np.asarray(suite.predictions_of(run_dir))
        out.update(glue_scores(spec, dev.labels, predictions))
        out["inference_peak_rss_mb"] = _inference(run_dir).get("host_peak_rss_mb")
        return out

    def run_one(row, run_dir):
        if not row.get("zero_shot_of"):
            return train_one(row["task"], row["variant"], run_dir)
        spec, _, dev = by_name[row["task"]]
        baseline_dir, retrained = baseline_dirs[row["task"]], {}
        if not (baseline_dir / "model.keras").is_file():
            # The baseline row is finished but its model is gone (models are not kept in git,
            # so a fresh checkout has none): train it again, with the same settings, beside
            # this row, and report its score so the two baselines can be compared.
            baseline_dir = pathlib.Path(run_dir) / "baseline"
            again = train_one(row["task"], variants[0], baseline_dir)
            # (Its inference peak memory would include that training's: not comparable.)
            retrained = {"baseline_retrained": True,
                         "baseline_retrained_glue_score": again["glue_score"],
                         "inference_peak_rss_mb": None}
        return {**zero_shot(settings, spec, dev, baseline_dir, run_dir), **retrained}

    # Each task's baseline runs before its zero-shot row (plan's order), in this folder.
    for row in rows:
        if row["variant"] == variants[0]:
            baseline_dirs[row["task"]] = pathlib.Path(
                settings["output_dir"]) / "glue" / "runs" / row["run_id"]

    return sweep.run_sweep(rows, run_one, settings["output_dir"] + "/glue",
                           columns=["run_id", "task", "variant", "glue_metric", "glue_score"])


def glue_scores(spec, labels, predictions):
    """The task's GLUE metrics as row columns (``glue_<metric>``, ``glue_score``)."""
    from keras_effattn.training.evaluate import glue_metrics

    scores = glue_metrics(spec.name, labels, predictions)
    return {**{f"glue_{k}": v for k, v in scores.items()},
            "glue_score": scores[spec.metrics[0]], "glue_metric": spec.metrics[0]}


def zero_shot(settings, spec, dev, baseline_dir, run_dir):
    """The zero-shot row: the task's fine-tuned baseline with `settings["zero_shot"]` attention
    swapped in (`keras_effattn.models.swap_classifier_attention`), evaluated on dev untrained."""
    import keras
    import numpy as np

    from keras_effattn.models import swap_classifier_attention
    from keras_effattn.training.fit import evaluate_model
    from keras_effattn.utils import io

    model_path = pathlib.Path(baseline_dir) / "model.keras"
    baseline = common.load_model(model_path)
    model = swap_classifier_attention(baseline, settings["zero_shot"])
    evaluation = evaluate_model(model, dev)
    predictions = np.asarray(evaluation["predictions"])
    out = glue_scores(spec, dev.labels, predictions)
    out["accuracy"] = evaluation.get("accuracy")
    out["inference_peak_rss_mb"] = evaluation["inference"].get("host_peak_rss_mb")
    pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)
    io.write_json(pathlib.Path(run_dir) / "metrics.json",
                  {"evaluation": {k: v for k, v in evaluation.items() if k != "labels"},
                   "zero_shot": settings["zero_shot"], "baseline": str(model_path.name)})
    keras.backend.clear_session()
    return out


def spec_classes(spec):
    """The model's outputs for a task: its class count, or 1 (a regressor) for STS-B."""
    return 1 if spec.is_regression else len(spec.class_names)


def _inference(run_dir):
    from keras_effattn.utils import io

    return io.read_json(f"{run_dir}/metrics.json")["evaluation"]["inference"]


def masked_lm_perplexity(model, batches):
    """``exp`` of the masked-token cross-entropy summed over `batches` of preprocessed
    ``(x, y, sample_weight)`` and divided by the number of masked tokens."""
    import numpy as np

    from keras_effattn.models.masked_lm import masked_lm_loss

    loss_fn = masked_lm_loss()
    total, count = 0.0, 0.0
    for x, y, weight in batches:
        logits = model(x, training=False)
        mean = float(loss_fn(y, logits, sample_weight=weight))
        tokens = float(np.sum(np.asarray(weight)))
        total += mean * tokens
        count += tokens
    if count == 0:
        raise ValueError("No masked tokens in the evaluation text; use longer chunks.")
    return math.exp(total / count), total / count, int(count)


# Seeds of the whole-word masks: one stream for the evaluation text, one per training stage
# (every variant continues on the same masks, in the same order).
EVAL_STREAM, ADAPT_STREAM, CONTINUE_STREAM = 1, 2, 3


def run_perplexity(settings, data_dir, rows, source):
    """Part 2 on WikiText-2 (trained on valid, scored on test), the rows of `plan`.

    The ``adapt`` row fine-tunes the masked-LM head and the encoder with the standard
    attention (the first variant) for ``mlm_adapt_epochs`` and saves the model; each
    ``continue`` row swaps its attention into that model and trains ``mlm_epochs`` more with
    the same masks, order and schedule; each ``zero-shot`` row swaps and scores without
    training. Every row is scored on the same cached whole-word masks of the test text.
    """
    import keras

    from keras_effattn.data.wikitext import OFFLINE_NOTE, OFFLINE_SPLITS, read_wikitext
    from keras_effattn.models import build_masked_lm, swap_masked_lm_attention
    from keras_effattn.models.masked_lm import encode_unmasked
    from keras_effattn.training.precision import precision_scope
    from keras_effattn.utils import io

    folder = data_dir / "wikitext-2"
    train_chunks = read_wikitext(folder, OFFLINE_SPLITS["train"]).chunks(settings["mlm_max_words"])
    eval_chunks = read_wikitext(folder, OFFLINE_SPLITS["eval"]).chunks(settings["mlm_max_words"])
    if settings["mlm_train_chunks"]:
        train_chunks = train_chunks[: settings["mlm_train_chunks"]]
    if settings["mlm_eval_chunks"]:
        eval_chunks = eval_chunks[: settings["mlm_eval_chunks"]]
    out_dir = pathlib.Path(settings["output_dir"]) / "wikitext"
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_key = eval_mask_key(settings, eval_chunks)
    cache = eval_mask_cache(out_dir, mask_key)
    adapt_row = next(row for row in rows if row["stage"] == "adapt")
    adapted_path = out_dir / "runs" / adapt_row["run_id"] / "model.keras"
    encoded = {}

    def tokens(model, name, chunks):
        if name not in encoded:
            encoded[name] = encode_unmasked(model.preprocessor, chunks)
        return encoded[name]

    def run_one(row, run_dir):
        keras.utils.set_random_seed(settings["seed"])
        with precision_scope(settings["precision"]):
            if row["stage"] == "adapt":
                model = build_masked_lm(source, attention=row["variant"],
                                        max_length=settings["max_length"])
            else:
                model = swap_masked_lm_attention(load_adapted(adapted_path), row["variant"])
        out = {}
        if row["stage"] != "zero-shot":
            epochs, stream = ((settings["mlm_adapt_epochs"], ADAPT_STREAM)
                              if row["stage"] == "adapt"
                              else (settings["mlm_epochs"], CONTINUE_STREAM))
            out = train_masked_lm(model, tokens(model, "train", train_chunks), settings, epochs,
                                  stream)
        if row["stage"] == "adapt":
            io.save_keras_model(model, pathlib.Path(run_dir) / "model.keras")
        eval_batches = shared_eval_batches(
            lambda: eval_arrays(model, tokens(model, "eval", eval_chunks), settings["seed"]),
            settings["batch_size"], cache, mask_key)
        ppl, loss, masked = masked_lm_perplexity(model, eval_batches)
        keras.backend.clear_session()
        return {"perplexity": ppl, "eval_cross_entropy": loss, "masked_tokens": masked, **out,
                "train_chunks": len(train_chunks), "eval_chunks": len(eval_chunks),
                "masking": "whole-word", "splits": "train=valid, eval=test (offline)",
                "note": OFFLINE_NOTE}

    return sweep.run_sweep(rows, run_one, out_dir,
                           columns=["run_id", "stage", "variant", "perplexity"])


def load_adapted(path):
    """The adapt row's saved masked-LM model (a continuation or zero-shot row starts from it)."""
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(
            f"The WikiText continuation rows start from the adapted model {path}, which is "
            "missing; re-run with --overwrite to adapt it again.")
    return common.load_model(path)


def train_masked_lm(model, encoded, settings, epochs, stream):
    """Trains `model` for `epochs` on whole-word masks drawn afresh each epoch (seeded by the
    run's seed, `stream` and the epoch, in a seeded order); returns the training columns."""
    import time

    import numpy as np
    import tensorflow as tf

    from keras_effattn.data.pipeline import without_autotune
    from keras_effattn.models.masked_lm import (
        mask_whole_words,
        masked_lm_loss,
        preprocessor_detached,
    )
    from keras_effattn.training.optimizers import build_optimizer
    from keras_effattn.utils.memory import MemoryMeter

    batch = settings["batch_size"]
    count = len(encoded["token_ids"])
    steps = count // batch
    if steps == 0:
        raise ValueError(f"{count} WikiText training chunks make no batch of {batch}; lower "
                         "--batch_size or raise --mlm_train_chunks.")
    model.compile(optimizer=build_optimizer(
        "adamw", settings["mlm_learning_rate"], total_steps=epochs * steps,
        weight_decay=settings["weight_decay"]), loss=masked_lm_loss(),
        jit_compile=settings["jit_compile"])
    losses = []
    meter = MemoryMeter().start()
    start = time.perf_counter()
    preprocessor = model.preprocessor
    with preprocessor_detached(model):
        for epoch in range(epochs):
            seed = [settings["seed"], stream, epoch]
            x, y, weight = mask_whole_words(preprocessor, encoded, seed)
            order = np.random.default_rng(seed).permutation(count)[: steps * batch]
            data = without_autotune(tf.data.Dataset.from_tensor_slices(
                ({k: v[order] for k, v in x.items()}, y[order], weight[order])).batch(batch))
            history = model.fit(data, epochs=1, verbose=0)
            losses.append(float(history.history["loss"][-1]))
    seconds = time.perf_counter() - start
    memory = meter.stop()
    return {"epochs": epochs, "train_steps": epochs * steps, "train_seconds": seconds,
            "final_train_loss": losses[-1], "train_peak_rss_mb": memory["host_peak_rss_mb"]}


def eval_arrays(model, encoded, seed):
    """The evaluation text's whole-word masks (seeded by the run's seed only) as arrays."""
    from keras_effattn.models.masked_lm import mask_whole_words

    x, y, weight = mask_whole_words(model.preprocessor, encoded, [seed, EVAL_STREAM])
    return {**x, "mask_ids": y, "mask_weights": weight}


def eval_mask_key(settings, chunks):
    """What the evaluation masks depend on: the `MASK_KEY` settings and a hash of the text."""
    text = "\n".join(str(c) for c in chunks).encode("utf-8")
    return {**{k: settings[k] for k in MASK_KEY}, "num_chunks": len(chunks),
            "masking": "whole-word", "text_sha256": hashlib.sha256(text).hexdigest()}


def eval_mask_cache(folder, key):
    """The cache file of the masks made under `key`: ``<folder>/eval_masks_<hash>.npz``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return pathlib.Path(folder) / f"eval_masks_{digest}.npz"


def shared_eval_batches(make_arrays, batch_size, cache, key=None):
    """The masked evaluation batches ``(x, mask_ids, mask_weights)``, made once and cached.

    The masks are seeded, so they are the same in every process; the cache (``.npz``) also
    keeps a resumed sweep from re-tokenising, and records the masks that every row was scored
    on. It stores `key` (by default the file name, see `eval_mask_cache`) and is only read
    back under the same key.

    Args:
        make_arrays: no-argument callable returning the arrays ``token_ids``,
            ``padding_mask``, ``mask_positions``, ``mask_ids`` and ``mask_weights``; called
            only when `cache` does not exist.
        batch_size: int.
        cache: the ``.npz`` path.
        key: JSON-serialisable description of what made the masks.

    Raises:
        ValueError: when `cache` holds masks made under another key.
    """
    import numpy as np

    from keras_effattn.utils import io

    cache = pathlib.Path(cache)
    key_text = json.dumps(key if key is not None else cache.name, sort_keys=True)
    if cache.is_file():
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
        stored_key = str(arrays.pop("key", "no key"))
        if stored_key != key_text:
            raise ValueError(
                f"Evaluation-mask cache {cache} was made with other settings ({stored_key}, now "
                f"{key_text}); delete it or write to a new --output_dir."
            )
    else:
        arrays = {k: np.asarray(v) for k, v in make_arrays().items()}
        with io.atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, key=np.asarray(key_text), **arrays)
    keys = ("token_ids", "padding_mask", "mask_positions")
    return [({k: arrays[k][i:i + batch_size] for k in keys},
             arrays["mask_ids"][i:i + batch_size], arrays["mask_weights"][i:i + batch_size])
            for i in range(0, len(arrays["mask_ids"]), batch_size)]


STAGES_NOTE = (
    "`adapt`: the standard model's head and encoder trained from the checkpoint; `zero-shot`: "
    "the adapted model with the variant's attention swapped in, no training; `continue`: the "
    "swap trained further with the same budget for every variant. All rows are scored on the "
    "same masked tokens.")


def report(glue_rows, ppl_rows, variants, out_dir):
    """Writes the top-level tables, the PNGs and summary.md (a part without rows is left out)."""
    from keras_effattn.data.wikitext import OFFLINE_NOTE
    from keras_effattn.utils import io

    lines = [f"# {QUESTION}"]
    if glue_rows:
        io.write_csv(f"{out_dir}/results.csv", glue_rows)
        columns = ["task", "variant", "glue_metric", "glue_score", "glue_accuracy", "glue_f1",
                   "glue_spearman", "latency_ms_per_sample", "inference_peak_rss_mb",
                   "epoch_seconds", "trainable_params"]
        if any(r.get("baseline_retrained_glue_score") not in (None, "") for r in glue_rows):
            # A zero-shot row swapped into a baseline trained again (its own score beside it).
            columns.append("baseline_retrained_glue_score")
        lines += ["", "## GLUE dev (each task's metric)", "",
                  suite.conditions_note(pathlib.Path(out_dir) / "glue", glue_rows), "",
                  suite.markdown_table(glue_rows, columns)]
        glue_chart(glue_rows, variants, f"{out_dir}/glue_scores.png")
    if ppl_rows:
        io.write_csv(f"{out_dir}/perplexity.csv", ppl_rows)
        lines += ["", "## WikiText-2 masked-LM perplexity (whole-word masks)", "",
                  f"**{OFFLINE_NOTE}**", "",
                  STAGES_NOTE + " " + suite.devices_note(
                      suite.run_devices(pathlib.Path(out_dir) / "wikitext", ppl_rows)), "",
                  suite.markdown_table(ppl_rows, ["stage", "variant", "perplexity",
                                                  "eval_cross_entropy", "masked_tokens",
                                                  "train_seconds", "splits"])]
        suite.bar_chart([f"{r['stage']}\n{r['variant']}" for r in ppl_rows],
                        [sweep.as_float(r["perplexity"]) for r in ppl_rows],
                        f"{out_dir}/perplexity.png", "perplexity",
                        "WikiText-2 MLM perplexity (trained on valid, evaluated on test)")
    io.write_text(f"{out_dir}/summary.md", "\n".join(lines))


def glue_chart(glue_rows, variants, path):
    """Grouped bars: each task's dev score per variant."""
    from keras_effattn.utils import io

    tasks = list(dict.fromkeys(r["task"] for r in glue_rows))
    variants = [v for v in variants if any(r["variant"] == v for r in glue_rows)]
    plt = suite._pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        scores = [next((sweep.as_float(r["glue_score"]) for r in glue_rows
                        if r["task"] == t and r["variant"] == variant), math.nan) for t in tasks]
        axis.bar([j + i * width for j in range(len(tasks))], scores, width, label=variant)
    axis.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(tasks))],
                    [f"{t}\n({r})" for t, r in zip(tasks, [next(
                        x["glue_metric"] for x in glue_rows if x["task"] == t) for t in tasks])],
                    fontsize=8)
    axis.set_ylabel("dev score")
    axis.set_title("GLUE dev: standard vs low-rank attention", fontsize=10)
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    io.save_figure(figure, path)


def finished_rows(folder):
    """The finished rows a part switched off in this run left in `folder` (its results.json,
    whose numbers keep their types, so the summary formats them as the running part's), so
    the summary keeps both parts; [] when there are none."""
    from keras_effattn.utils import io

    path = pathlib.Path(folder) / "results.json"
    return io.read_json(path)["rows"] if path.is_file() else []


def run(settings, data_dir, overwrite=False):
    """Runs the GLUE and perplexity rows the settings ask for, then writes the report."""
    variants, glue_plan, mlm_plan = plan(settings)
    if not glue_plan and not mlm_plan:
        raise ValueError("--noglue and --noperplexity leave nothing to run; drop one of them.")
    suite.prepare_sweep(settings, NAME, QUESTION, [(glue_plan, "glue"), (mlm_plan, "wikitext")],
                        overwrite=overwrite)
    source = suite.backbone_source(settings["backbone"])
    out_dir = pathlib.Path(settings["output_dir"])
    glue_rows = (run_glue(settings, data_dir, glue_plan, source) if glue_plan
                 else finished_rows(out_dir / "glue"))
    ppl_rows = (run_perplexity(settings, data_dir, mlm_plan, source) if mlm_plan
                else finished_rows(out_dir / "wikitext"))
    shown = variants + ([f"zero-shot {settings['zero_shot']}"] if settings["zero_shot"] else [])
    report(glue_rows, ppl_rows, shown, out_dir)


if __name__ == "__main__":
    suite.run_script(NAMES, {"quick": QUICK, "cpu": CPU}, NAME, run)
