"""Zero-shot swap quality: how far do FAVOR+ and Linformer move pretrained MiniLM embeddings?

Takes the offline pretrained all-MiniLM-L6-v2 (as a DistilBERT backbone), swaps its attention
for each variant WITHOUT any fine-tuning, and compares the [CLS] and mean-pooled embeddings of
real IMDB test reviews with those of the exact (stock softmax) backbone: per-review cosine
similarity (mean and worst) and the relative error of the sequence output. Variants: exact
(sanity), FAVOR+ with 64/128/256/512 features, Linformer with k 64/128/256, and hybrids that
keep exact attention in the lower layers. A crashed run resumes and skips finished rows.

Quick:  python experiments/zero_shot_swap.py --num_reviews=16 --max_length=128 \
            --output_dir=runs/zero_shot_quick
Full:   python experiments/zero_shot_swap.py --num_reviews=64 --max_length=256 --seeds=0,1,2
            --output_dir=results/zero_shot_swap   (the published table; default: runs/)
One:    python experiments/zero_shot_swap.py --variant='exact*3,favor(num_features=128)*3'
"""

import pathlib
import sys

from absl import flags

from experiments import common

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# --- data ---
flags.DEFINE_string("data_dir", None, "Shared data folder (default: ../shared/data).")
flags.DEFINE_integer("num_reviews", 64, "IMDB test reviews (half positive, half negative).")
flags.DEFINE_integer("max_length", 256, "Tokens per review (truncated, padded).")
# --- variants ---
flags.DEFINE_multi_string(
    "variant",
    [
        "exact",
        "favor(num_features=64)",
        "favor(num_features=128)",
        "favor(num_features=256)",
        "favor(num_features=512)",
        "lowrank(k=64)",
        "lowrank(k=128)",
        "lowrank(k=256)",
        "exact*4,favor(num_features=256)*2",
        "exact*4,lowrank(k=128)*2",
        "favor(num_features=256)*2,exact*4",
    ],
    "An attention spec to compare with the exact backbone; repeat the flag for several.",
)
flags.DEFINE_list("seeds", ["0"], "Seeds of the random features / projections.")
# --- run ---
flags.DEFINE_integer("batch_size", 16, "Reviews per forward pass.")
flags.DEFINE_string(
    "output_dir", None, "Results folder (default: runs/zero_shot_swap in the repository; "
    "the published table is results/zero_shot_swap)."
)
FLAGS = flags.FLAGS
NUM_LAYERS = 6  # all-MiniLM-L6-v2

COLUMNS = (
    "variant",
    "seed",
    "spec",
    "cls_cosine_mean",
    "cls_cosine_min",
    "mean_cosine_mean",
    "mean_cosine_min",
    "sequence_rel_error",
)


def with_seed(spec, seed):
    """Gives every random layer of a spec its own seed (1000 * seed + depth); None if none."""
    from keras_effattn.layers import spec as spec_lib

    seeded, random = [], False
    for depth, layer in enumerate(spec_lib.parse_attention_spec(spec, NUM_LAYERS)):
        options = layer.kwargs
        if layer.kind in ("favor", "lowrank"):
            options.setdefault("seed", 1000 * seed + depth)
            random = True
        seeded.append(spec_lib.LayerSpec(layer.kind, tuple(sorted(options.items()))))
    return spec_lib.format_attention_spec(seeded), random


def markdown_table(rows, num_reviews, max_length):
    lines = [
        (f"Zero-shot swap quality of all-MiniLM-L6-v2 on {num_reviews} IMDB test reviews "
         f"({max_length} tokens), vs the exact backbone; mean over seeds (min over reviews)."),
        "",
        ("| variant | seeds | CLS cosine mean | CLS cosine min | mean-pool cosine mean | "
         "mean-pool cosine min | seq. rel. error |"),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = []
    for row in rows:
        if row["variant"] not in order:
            order.append(row["variant"])
    for variant in order:
        group = [r for r in rows if r["variant"] == variant]

        def avg(key, group=group):
            return sum(float(r[key]) for r in group) / len(group)

        def low(key, group=group):
            return min(float(r[key]) for r in group)

        lines.append(
            f"| `{variant}` | {len(group)} | {avg('cls_cosine_mean'):.4f} | "
            f"{low('cls_cosine_min'):.4f} | {avg('mean_cosine_mean'):.4f} | "
            f"{low('mean_cosine_min'):.4f} | {avg('sequence_rel_error'):.4f} |"
        )
    return "\n".join(lines) + "\n"


def check_flags():
    """Checks seeds, sizes, specs and the data before anything is written; returns
    ``(data_dir, seeds)``.

    Raises:
        common.UsageError / FileNotFoundError: naming the flag and the fix.
    """
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise common.UsageError(f"--seeds={','.join(FLAGS.seeds)} must be integers, e.g. "
                                "--seeds=0,1,2.") from None
    for name in ("num_reviews", "max_length", "batch_size"):
        if FLAGS[name].value < 2:
            raise common.UsageError(f"--{name}={FLAGS[name].value} must be at least 2.")
    for variant in FLAGS.variant:
        common.check_attention_spec(variant, flag="--variant", num_layers=NUM_LAYERS)
    data_dir = common.data_dir(FLAGS.data_dir)
    if not (data_dir / common.IMDB_ARCHIVE).is_file():
        raise FileNotFoundError(f"No {common.IMDB_ARCHIVE} in {data_dir}; pass --data_dir with "
                                "the shared data.")
    return data_dir, seeds


def main(argv):
    del argv
    data_dir, seeds = check_flags()
    import keras
    import keras_hub

    import keras_effattn
    from keras_effattn.data import read_imdb
    from keras_effattn.models import zero_shot
    from keras_effattn.utils import io, metadata

    out = (
        pathlib.Path(FLAGS.output_dir)
        if FLAGS.output_dir
        else REPO_ROOT / "runs" / "zero_shot_swap"
    )
    variants = list(FLAGS.variant)
    config = {
        "flags": {name: FLAGS[name].value for name in ("num_reviews", "max_length", "batch_size")},
        "variants": variants,
        "seeds": seeds,
        "reference": "minilm-l6, stock keras MultiHeadAttention (exact softmax)",
        **metadata.run_metadata(),
    }
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "config.json", config)

    reviews = read_imdb(
        data_dir / "aclImdb_v1.tar.gz", "test", max_per_class=FLAGS.num_reviews // 2, seed=0
    )
    packer = keras_hub.models.DistilBertTextClassifierPreprocessor(
        keras_effattn.models.tokenizer_for("minilm-l6"), sequence_length=FLAGS.max_length
    )
    x = packer(reviews.texts)
    ids, mask = (
        keras.ops.convert_to_numpy(x["token_ids"]),
        keras.ops.convert_to_numpy(x["padding_mask"]),
    )
    exact = keras_effattn.load_backbone("minilm-l6")
    reference = zero_shot.encode(exact, ids, mask, FLAGS.batch_size)

    csv_path = out / "results.csv"
    rows = [r for r in io.read_csv(csv_path)] if csv_path.exists() else []
    done = {(r["variant"], int(r["seed"])) for r in rows}
    for variant in variants:
        for seed in seeds:
            if (variant, seed) in done:
                continue
            spec, random = with_seed(variant, seed)
            if not random and seed != seeds[0]:
                continue  # deterministic variant: one row is enough
            keras.utils.set_random_seed(seed)
            swapped = keras_effattn.swap_attention(exact, spec)
            scores = zero_shot.embedding_similarity(
                reference, zero_shot.encode(swapped, ids, mask, FLAGS.batch_size)
            )
            rows.append({"variant": variant, "seed": seed, "spec": spec, **scores})
            io.write_csv(csv_path, rows, columns=COLUMNS)
            print(f"{variant} seed={seed}: {scores}", file=sys.stderr)
    io.write_json(out / "results.json", {"rows": rows, "num_tokens": int(mask.sum())})
    io.write_text(out / "results.md", markdown_table(rows, len(ids), FLAGS.max_length))


if __name__ == "__main__":
    common.run(main)
