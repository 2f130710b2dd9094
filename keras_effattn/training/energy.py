"""Energy and carbon of a block of work, with CodeCarbon's offline tracker.

`EnergyMeter` wraps ``codecarbon.OfflineEmissionsTracker``: no network access, the carbon
intensity comes from CodeCarbon's bundled per-country table (`country_iso_code`, default "USA").
CodeCarbon estimates power from RAPL counters, NVML (GPUs) or, failing both, the CPU's TDP and a
memory model, so figures are estimates; the report records which country and what was measured.
When CodeCarbon is missing or fails, the meter reports ``available: False`` with the reason and
training carries on: energy is a measurement, never a reason to lose a run.

Example:

>>> with EnergyMeter(enabled=False) as meter:
...     pass
>>> meter.result["available"], meter.result["reason"]
(False, 'disabled')

References:
    Lacoste et al., "Quantifying the Carbon Emissions of Machine Learning", arXiv:1910.09700;
    CodeCarbon, https://mlco2.github.io/codecarbon/
"""

import logging
import time


class EnergyMeter:
    """Measures energy (kWh) and emissions (kg CO2eq) between `start` and `stop`.

    Args:
        enabled: bool, default True. False measures nothing (``available: False``).
        country_iso_code: str, default "USA". Three-letter ISO code for the grid intensity.
        measure_power_secs: float, default 5. CodeCarbon's power sampling interval.
        output_dir: str or None. Where CodeCarbon may write its CSV; None writes nothing.
    """

    def __init__(
        self, enabled=True, country_iso_code="USA", measure_power_secs=5, output_dir=None
    ):
        if not (isinstance(country_iso_code, str) and len(country_iso_code) == 3):
            raise ValueError(
                f"country_iso_code must be a three-letter ISO code such as 'USA' or 'FRA', "
                f"got {country_iso_code!r}."
            )
        if measure_power_secs <= 0:
            raise ValueError(f"measure_power_secs must be positive, got {measure_power_secs}.")
        self.enabled = enabled
        self.country_iso_code = country_iso_code.upper()
        self.measure_power_secs = measure_power_secs
        self.output_dir = output_dir
        self._tracker = None
        self._reason = "disabled" if not enabled else None
        self.result = None

    def start(self):
        """Starts tracking; returns self. Never raises because of CodeCarbon."""
        self._start = time.perf_counter()
        if not self.enabled:
            return self
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as error:
            self._reason = f"codecarbon not installed ({error})"
            return self
        try:
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                measure_power_secs=self.measure_power_secs,
                save_to_file=self.output_dir is not None,
                output_dir=self.output_dir or ".",
                log_level="error",
                allow_multiple_runs=True,
            )
            self._tracker.start()
        except Exception as error:  # noqa: BLE001 -- any tracker failure only disables energy
            self._tracker = None
            self._reason = f"codecarbon failed to start: {type(error).__name__}: {error}"
        return self

    def stop(self):
        """Stops tracking; returns and stores the result dict.

        Returns:
            dict with ``available``, ``reason`` (None when available), ``energy_kwh``,
            ``emissions_kg_co2``, ``country_iso_code``, ``duration_s``.
        """
        duration = time.perf_counter() - self._start
        result = {
            "available": False,
            "reason": self._reason,
            "energy_kwh": None,
            "emissions_kg_co2": None,
            "country_iso_code": self.country_iso_code,
            "duration_s": duration,
        }
        if self._tracker is not None:
            try:
                emissions = self._tracker.stop()
                data = self._tracker.final_emissions_data
                result.update(
                    available=True,
                    reason=None,
                    energy_kwh=float(data.energy_consumed),
                    emissions_kg_co2=float(emissions if emissions is not None else data.emissions),
                )
            except Exception as error:  # noqa: BLE001
                result["reason"] = f"codecarbon failed to stop: {type(error).__name__}: {error}"
            finally:
                self._tracker = None
                logging.getLogger("codecarbon").handlers.clear()
        self.result = result
        return result

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
