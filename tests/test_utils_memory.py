import numpy as np
import pytest

from keras_effattn.utils import memory


def test_meter_sees_a_large_allocation():
    meter = memory.MemoryMeter(interval=0.01).start()
    base = memory.current_rss_bytes()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    result = meter.stop()
    del block
    assert result["host_peak_rss_mb"] >= base / 2**20 + 150
    if not memory._gpu_devices():
        assert result["device_peak_mb"] is None
    assert memory.peak_rss_bytes() >= result["host_peak_rss_mb"] * 2**20 * 0.9


def test_bad_interval():
    with pytest.raises(ValueError, match="interval"):
        memory.MemoryMeter(interval=0)
