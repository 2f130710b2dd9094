import pytest

from keras_effattn.training import distribute


def test_default_strategy_has_one_replica():
    assert distribute.get_strategy("default").num_replicas_in_sync == 1


@pytest.mark.parametrize("name, error, match", [
    ("horovod", ValueError, "strategy must be one of"),
    ("tpu", ValueError, "No TPU found"),
], ids=["unknown", "tpu-without-tpu"])
def test_bad_strategy(name, error, match):
    with pytest.raises(error, match=match):
        distribute.get_strategy(name)


def test_split_cpu_after_initialisation_is_a_clear_error():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # devices are initialised now
    with pytest.raises(ValueError, match="before TensorFlow initialises"):
        distribute.split_cpu(2)
    with pytest.raises(ValueError, match="num_devices"):
        distribute.split_cpu(0)
