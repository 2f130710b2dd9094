"""tf.data pipelines that end when their last batch is read: tf.data autotuning off.

With autotuning on (TensorFlow's default), every iterator runs a model thread that re-tunes the
pipeline's parallelism and buffers on a doubling period of 10 ms up to 60 s. On TensorFlow
2.21 the destruction of an exhausted iterator then sometimes waits for that thread's next
wake-up: `keras.Model.fit` or `predict` returned up to 60 s after its last batch, in about half
of the runs, with one core idle (measured on a 2-core AMD EPYC, Zen 4: a 2,000-review
evaluation took 142.1 s instead of 85 s, of which 49.8 s after the last batch; training runs
ended on the same 60-s grid; that the wait is for the model thread's wake-up is inferred from
the grid and TensorFlow's periods). With autotuning off there is no model thread: the
pipelines keep their ``AUTOTUNE`` knobs, which TensorFlow then resolves to its static defaults,
and the evaluation ended 0.16 s after its last batch. The pipelines here are short and
CPU-bound (slicing in-memory arrays, tokenising a batch), so tuning had nothing to gain: with
it off the same evaluation ran at 42.5–45.3 ms per review, as fast as the runs that did not
wait.

Example:

>>> import tensorflow as tf
>>> ds = without_autotune(tf.data.Dataset.range(4).batch(2))
>>> ds.options().autotune.enabled
False
>>> [b.tolist() for b in ds.as_numpy_iterator()]
[[0, 1], [2, 3]]
"""


def without_autotune(dataset):
    """`dataset` with tf.data autotuning disabled (see the module docstring for why)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
