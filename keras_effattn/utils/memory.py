"""Peak-memory readers: the host process's peak RSS and TensorFlow's accelerator allocator peak.

On CPU the meaningful figure is the process's resident set; `peak_rss_bytes` reads the kernel's
high-water mark (``ru_maxrss``), which cannot be reset, so `MemoryMeter` also samples the current
RSS to report a peak within a window. On GPU, TensorFlow's allocator keeps its own peak, which
`reset_device_peak` clears.

Example:

>>> meter = MemoryMeter()
>>> meter = meter.start()  # returns itself
>>> data = bytearray(10_000_000)
>>> meter.stop()["host_peak_rss_mb"] > 0
True
"""

import os
import sys
import threading

import psutil


def current_rss_bytes():
    """The current resident set size of this process, in bytes."""
    return psutil.Process(os.getpid()).memory_info().rss


def peak_rss_bytes():
    """The process's lifetime peak resident set size, in bytes (``ru_maxrss``)."""
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set.
        info = psutil.Process(os.getpid()).memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _gpu_devices():
    import tensorflow as tf

    return [f"GPU:{i}" for i, _ in enumerate(tf.config.list_logical_devices("GPU"))]


def device_peak_bytes():
    """TensorFlow's allocator peak summed over the visible GPUs, or None on CPU-only hosts."""
    import tensorflow as tf

    devices = _gpu_devices()
    if not devices:
        return None
    return int(sum(tf.config.experimental.get_memory_info(d)["peak"] for d in devices))


def reset_device_peak():
    """Resets TensorFlow's allocator peak on every visible GPU (no-op on CPU)."""
    import tensorflow as tf

    for device in _gpu_devices():
        tf.config.experimental.reset_memory_stats(device)


class MemoryMeter:
    """Measures peak memory over a window: host RSS (sampled) and the GPU allocator peak.

    Args:
        interval: float, default 0.05. Seconds between RSS samples in the background thread.
    """

    def __init__(self, interval=0.05):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}.")
        self.interval = interval
        self._thread = None
        self._stop = threading.Event()
        self._peak = 0

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, current_rss_bytes())

    def start(self):
        """Starts a window: resets the device peak and starts sampling host RSS."""
        reset_device_peak()
        self._peak = current_rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def host_peak_mb(self):
        """The host RSS peak of the window so far, in MiB (the window keeps running)."""
        return max(self._peak, current_rss_bytes()) / 2**20

    def stop(self):
        """Ends the window; returns ``{"host_peak_rss_mb", "device_peak_mb"}`` (None on CPU)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._peak = max(self._peak, current_rss_bytes())
        device = device_peak_bytes()
        return {
            "host_peak_rss_mb": self._peak / 2**20,
            "device_peak_mb": None if device is None else device / 2**20,
        }

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.result = self.stop()
        return False
