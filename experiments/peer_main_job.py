"""The main job against its PyTorch peer, in one command and one run.

Question answered: is fine-tuning with keras_effattn as fast as the Hugging Face transformers +
PyTorch loop a user would write instead, at the same accuracy, and what does ``--precision=auto``
(mixed_bfloat16 on a CPU with bf16 units, float32 elsewhere) add?

Runs, one after another in fresh processes, each into its own folder under ``--output_dir``:
our main job (`experiments.train`) at each of ``--precisions``, and the peer
(`experiments.torch_peer`) at each of ``--torch_precisions``, on the same texts with the same
recipe. A finished side is skipped when the command is run again (its ``metrics.json`` is read
back), so a killed comparison resumes; a side that fails stops the command with its exit status.
Writes ``results.json`` and ``results.md``: training seconds, samples per second, evaluation
seconds, accuracy, and each of our rows' speed-up over each peer row (peer training time over
ours), with the CPU, its instruction sets and the load. Keep the machine otherwise idle.

Examples:
    python -m experiments.peer_main_job                       # the main job's sizes (~1 h)
    python -m experiments.peer_main_job --train_per_class=16 --eval_per_class=8 \\
        --output_dir=runs/peer_smoke                          # a smoke test (2 steps a side)
"""

import subprocess
import sys

from absl import flags

from experiments import common

common.define_common_flags()
flags.DEFINE_list("precisions", ["float32", "auto"], "Our main job's --precision values.")
flags.DEFINE_list("torch_precisions", ["float32", "bfloat16"],
                  "The peer's precisions (float32, bfloat16 autocast); empty: no peer.")
flags.DEFINE_integer("train_per_class", 2000, "Balanced training reviews per class.",
                     lower_bound=1)
flags.DEFINE_integer("eval_per_class", 1000, "Balanced test reviews per class.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from experiments import peers

    settings = {name: FLAGS[name].value for name in (
        "precisions", "torch_precisions", "train_per_class", "eval_per_class",
        "seed", "data_dir", "output_dir")}
    bad = [p for p in settings["precisions"] if p not in peers.OURS]
    if bad or not settings["precisions"]:
        raise common.UsageError(
            f"--precisions {bad or '(empty)'}: choose from {list(peers.OURS)}.")
    bad = [p for p in settings["torch_precisions"] if p not in peers.PEER]
    if bad:
        raise common.UsageError(f"--torch_precisions {bad}: choose from {list(peers.PEER)}.")
    common.data_dir(settings["data_dir"])
    if settings["torch_precisions"] and not peers.torch_available():
        print("note: the PyTorch peer is left out: torch and transformers are not installed "
              "(pip install torch transformers).")
        settings["torch_precisions"] = []
    folder = common.output_dir(settings["output_dir"], "peer_main_job", "latest")
    from keras_effattn.utils import io, metadata

    rows = []
    for name, out, argv in peers.side_commands(settings, folder):
        if not (out / "metrics.json").is_file():
            print(f"running {name} -> {common.display_path(out)}", flush=True)
            status = subprocess.call([sys.executable, *argv], cwd=common.REPO_ROOT)
            if status:
                raise SystemExit(f"{name} failed with exit status {status}; its output is above "
                                 f"and its folder is {common.display_path(out)}.")
        rows.append(peers.read_side(name, out))
    rows = peers.with_speedups(rows)
    meta = {"cpu": metadata.cpu_model(), "cpu_isa": metadata.cpu_isa(),
            "load_average": metadata.load_average(), **metadata.run_metadata()}
    io.write_json(folder / "results.json", {"settings": settings, "metadata": meta,
                                            "rows": rows})
    text = peers.markdown(rows, meta)
    io.write_text(folder / "results.md", text)
    print(text)


if __name__ == "__main__":
    common.run(main)
