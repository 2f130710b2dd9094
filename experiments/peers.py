"""The peers a user would pick instead of keras_effattn for the main job, and the comparison's
table: what `experiments.torch_peer` and `experiments.peer_main_job` run (no flags here, so
tests and other scripts can import it).

`train_torch_peer` is the main job as a PyTorch user writes it (Hugging Face transformers,
eager PyTorch, the same texts and recipe); `side_commands`, `read_side`, `with_speedups` and
`markdown` build the one-run comparison against our main job.
"""

import importlib.util
import os
import time

OURS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
PEER = ("float32", "bfloat16")
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
CLIPNORM = 1.0
DROPOUT = 0.1


def torch_available():
    """Whether the PyTorch peers can run (torch and transformers importable); scripts leave the
    peers out with a note otherwise."""
    return all(importlib.util.find_spec(name) for name in ("torch", "transformers"))


def build_model(path, torch):
    """The MiniLM encoder with the main job's head: masked mean, dropout, linear (2 classes)."""
    import transformers

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = transformers.AutoModel.from_pretrained(path)
            self.dropout = torch.nn.Dropout(DROPOUT)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, 2)

        def forward(self, input_ids, attention_mask):
            sequence = self.encoder(input_ids=input_ids,
                                    attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(sequence.dtype)
            pooled = (sequence * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled))

    model = Classifier()
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


def optimizer_and_schedule(model, total_steps, learning_rate, torch):
    """AdamW with decay on weights only, and 10 % linear warmup then linear decay to zero."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate)
    warmup = max(1, int(WARMUP_RATIO * total_steps))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_torch_peer(settings, data_dir):
    """Fine-tunes the peer with `settings` (the `experiments.torch_peer` flags as a dict) on the
    IMDB archive in `data_dir`; returns the metrics dict that script writes."""
    import numpy as np
    import torch
    import transformers

    from keras_effattn.data import read_imdb
    from keras_effattn.models.minilm import minilm_l6_path
    from keras_effattn.training.evaluate import classification_metrics
    from keras_effattn.utils import metadata

    torch.manual_seed(settings["seed"])
    torch.set_num_threads(os.cpu_count() or 1)
    archive = data_dir / "aclImdb_v1.tar.gz"
    train = read_imdb(archive, "train", settings["train_per_class"], seed=settings["seed"])
    test = read_imdb(archive, "test", settings["eval_per_class"], seed=settings["seed"] + 1)
    path = minilm_l6_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    def encode(texts):
        batch = tokenizer(list(texts), padding="max_length", truncation=True,
                          max_length=settings["max_length"], return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    model = build_model(path, torch)
    batch_size = settings["batch_size"]
    steps = len(train.texts) // batch_size
    if settings["max_train_steps"]:
        steps = min(steps, settings["max_train_steps"])
    optimizer, schedule = optimizer_and_schedule(model, steps, settings["learning_rate"], torch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=settings["precision"] == "bfloat16")
    order = np.random.default_rng(settings["seed"]).permutation(len(train.texts))
    labels = torch.tensor(np.asarray(train.labels), dtype=torch.long)
    model.train()
    start = time.perf_counter()
    losses = []
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        ids, mask = encode([train.texts[i] for i in index])
        with autocast:
            logits = model(ids, mask)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIPNORM)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start

    model.eval()
    start = time.perf_counter()
    predictions = []
    with torch.inference_mode(), autocast:
        for first in range(0, len(test.texts), settings["eval_batch_size"]):
            ids, mask = encode(test.texts[first:first + settings["eval_batch_size"]])
            predictions.append(model(ids, mask).float().argmax(-1).numpy())
    eval_seconds = time.perf_counter() - start
    scores = classification_metrics(np.asarray(test.labels), np.concatenate(predictions),
                                     num_classes=2)
    return {
        "peer": "transformers + PyTorch eager",
        "precision": settings["precision"],
        **{key: scores[key] for key in ("accuracy", "macro_f1")},
        "train_seconds": train_seconds,
        "train_steps": steps,
        "train_samples_per_s": steps * batch_size / train_seconds,
        "eval_seconds": eval_seconds,
        "final_loss": float(np.mean(losses[-20:])),
        "settings": dict(settings),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "cpu": metadata.cpu_model(),
        "cpu_isa": metadata.cpu_isa(),
    }


def side_commands(settings, folder):
    """``[(name, folder, argv)]`` of every side to run, ours first."""
    shared = [f"--train_per_class={settings['train_per_class']}",
              f"--eval_per_class={settings['eval_per_class']}", f"--seed={settings['seed']}"]
    if settings["data_dir"]:
        shared.append(f"--data_dir={settings['data_dir']}")
    sides = []
    for precision in settings["precisions"]:
        out = folder / f"keras_effattn_{precision}"
        argv = ["-m", "experiments.train", f"--output_dir={out}", f"--precision={precision}",
                "--save_model=false", "--energy=false", *shared]
        sides.append((f"keras_effattn {precision}", out, argv))
    for precision in settings["torch_precisions"]:
        out = folder / f"torch_{precision}"
        argv = ["-m", "experiments.torch_peer", f"--output_dir={out}",
                f"--precision={precision}", *shared]
        sides.append((f"transformers + PyTorch {precision}", out, argv))
    return sides


def read_side(name, out):
    """One table row from a finished side's ``metrics.json`` (either script's layout)."""
    from keras_effattn.utils import io

    metrics = io.read_json(out / "metrics.json")
    if "training" in metrics:  # experiments.train
        training, evaluation = metrics["training"], metrics["evaluation"]
        return {"side": name, "precision": metrics["precision"],
                "train_seconds": training["train_seconds"],
                "train_samples_per_s": training["train_samples_per_s"],
                "eval_seconds": evaluation["inference"]["seconds"],
                "accuracy": evaluation["accuracy"], "macro_f1": evaluation["macro_f1"]}
    return {"side": name, "precision": metrics["precision"],
            **{key: metrics[key] for key in ("train_seconds", "train_samples_per_s",
                                             "eval_seconds", "accuracy", "macro_f1")}}


def with_speedups(rows):
    """Adds ``speedup_vs_<peer side>`` (peer training seconds over ours) to our rows."""
    peers = [row for row in rows if not row["side"].startswith("keras_effattn")]
    for row in rows:
        if row["side"].startswith("keras_effattn"):
            for peer in peers:
                row[f"speedup_vs_{peer['side']}"] = peer["train_seconds"] / row["train_seconds"]
    return rows


def markdown(rows, meta):
    """The comparison as Markdown: one row per side, then our speed-ups over each peer."""
    lines = [f"# Main job vs its PyTorch peer ({meta['cpu']}; {meta['cpu_isa']})", "",
             "| side | precision | train s | samples/s | eval s | accuracy | macro F1 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['precision']} | {r['train_seconds']:.0f} | "
                     f"{r['train_samples_per_s']:.2f} | {r['eval_seconds']:.0f} | "
                     f"{r['accuracy']:.4f} | {r['macro_f1']:.4f} |")
    speedups = [(r["side"], key[len("speedup_vs_"):], value) for r in rows
                for key, value in r.items() if key.startswith("speedup_vs_")]
    if speedups:
        lines += ["", "Training speed-up (peer's training seconds over ours):", ""]
        lines += [f"- {ours} vs {peer}: {value:.2f}x" for ours, peer, value in speedups]
    return "\n".join(lines) + "\n"
