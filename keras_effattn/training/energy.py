"""Energy and carbon of a block of work, with CodeCarbon's offline tracker, and how it was got.

`EnergyMeter` wraps ``codecarbon.OfflineEmissionsTracker``: no network access, the carbon
intensity comes from CodeCarbon's bundled per-country table (`country_iso_code`, default "USA").
CodeCarbon reads hardware counters where it can (RAPL on Linux, the Windows Energy Meter
Interface, Intel Power Gadget, Apple PowerMetrics; NVML or AMD SMI for GPUs) and otherwise falls
back, silently, to a model: the CPU's TDP (from its table of CPU models, or a default of a few
watts per thread for a model it does not know) times the CPU load, or a constant share of it.
Memory is always a model. The meter therefore records the provenance of every figure:

- ``measured``: True only when the CPU (and any GPU) figure was read from hardware counters;
- ``method``: one line, starting "measured" or "estimated", naming the counters or the model,
  the CPU model and the watts used, e.g. ``"estimated: CodeCarbon CPU-load model (AMD EPYC,
  8 W: CodeCarbon's default of 4 W per thread, the model is not in its TDP table; x CPU load,
  at least 10%) + RAM model (20 W); no hardware counters read"``;
- ``components``: per part (``cpu``, ``ram``, ``gpu``) the tracker, whether it was measured,
  the model, the TDP and its source, the mean power (W) and the energy (kWh).

When CodeCarbon is missing, fails, or returns no positive energy, the meter reports
``available: False`` with the reason, ``method`` "failed: ..." and no figure, and training
carries on: energy is a measurement, never a reason to lose a run.

Example:

>>> with EnergyMeter(enabled=False) as meter:
...     pass
>>> meter.result["available"], meter.result["reason"], meter.result["method"]
(False, 'disabled', 'not measured: disabled')

References:
    Lacoste et al., "Quantifying the Carbon Emissions of Machine Learning", arXiv:1910.09700;
    CodeCarbon, https://mlco2.github.io/codecarbon/
"""

import logging
import math
import time

# CodeCarbon's CPU modes (codecarbon.external.hardware.CPU._mode) that read hardware counters,
# with the words the report uses for them.
_COUNTER_MODES = {
    "intel_rapl": "RAPL energy counters",
    "windows_emi": "Windows Energy Meter Interface (RAPL) counters",
    "intel_power_gadget": "Intel Power Gadget",
    "apple_powermetrics": "Apple PowerMetrics",
}


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
        self._running = False
        self.result = None

    @property
    def running(self):
        """True between `start` and `stop`."""
        return self._running

    def start(self):
        """Starts tracking; returns self. Never raises because of CodeCarbon."""
        self._start = time.perf_counter()
        self._running = True
        self.result = None
        if not self.enabled:
            return self
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError as error:
            self._reason = f"codecarbon not installed ({error})"
            return self
        # The tracker sets CodeCarbon's logger to "error" only after logging its start-up
        # lines; set it first, so a run's output holds no CodeCarbon INFO/WARNING noise.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
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

        Safe to call more than once, and before `start`: a meter that is not running returns
        its last result (None before any `start`) and touches no tracker. Training calls it on
        every path out, failures included, so CodeCarbon's sampling thread never outlives a run.

        Returns:
            dict with ``available``, ``reason`` (None when available), ``energy_kwh``,
            ``emissions_kg_co2``, ``country_iso_code``, ``duration_s``, ``measured``,
            ``method`` and ``components`` (see the module docstring).
        """
        if not self._running:
            return self.result
        self._running = False
        duration = time.perf_counter() - self._start
        result = {
            "available": False,
            "reason": self._reason,
            "energy_kwh": None,
            "emissions_kg_co2": None,
            "country_iso_code": self.country_iso_code,
            "duration_s": duration,
            "measured": False,
            "method": None,
            "components": {},
        }
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                emissions = tracker.stop()
                data = tracker.final_emissions_data
                energy = float(data.energy_consumed)
                emissions = float(emissions if emissions is not None else data.emissions)
                if not (math.isfinite(energy) and energy > 0 and math.isfinite(emissions)):
                    result["reason"] = (
                        f"codecarbon returned no energy figure ({energy} kWh, {emissions} kg "
                        "CO2); nothing was measured"
                    )
                else:
                    result.update(available=True, reason=None, energy_kwh=energy,
                                  emissions_kg_co2=emissions)
                    result.update(provenance(tracker, data))
            except Exception as error:  # noqa: BLE001
                result["reason"] = f"codecarbon failed to stop: {type(error).__name__}: {error}"
            finally:
                logging.getLogger("codecarbon").handlers.clear()
        if not result["available"]:
            result["method"] = ("not measured: disabled" if result["reason"] == "disabled"
                                else f"failed: {result['reason']}")
        self.result = result
        return result

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def provenance(tracker, data):
    """How a stopped CodeCarbon tracker got its figure: ``measured``, ``method``, ``components``.

    Reads the hardware CodeCarbon set up (``tracker._hardware``: its RAM, CPU and GPU objects,
    whose ``_mode`` says RAPL, CPU-load model or constant) and the final emissions data (mean
    power and energy per part). CodeCarbon has no public API for this; when its internals do not
    have the expected shape, the method says so and the figure counts as estimated.

    Args:
        tracker: a stopped ``codecarbon`` tracker.
        data: its ``final_emissions_data`` (an ``EmissionsData``).

    Returns:
        dict with ``measured`` (bool), ``method`` (str), ``components`` (dict) and
        ``codecarbon_version``.
    """
    version = str(getattr(data, "codecarbon_version", "") or _codecarbon_version())
    components = {}
    for hardware in list(getattr(tracker, "_hardware", None) or []):
        try:
            part, record = _describe(hardware, tracker, data)
        except Exception as error:  # noqa: BLE001 -- provenance never fails the figure
            part = type(hardware).__name__.lower()
            record = {"tracker": f"unknown ({type(error).__name__}: {error})", "measured": False}
        components.setdefault(part, record)
    for part in ("cpu", "gpu", "ram"):
        if part in components:
            components[part]["mean_power_w"] = _number(getattr(data, f"{part}_power", None))
            components[part]["energy_kwh"] = _number(getattr(data, f"{part}_energy", None))
    compute = [components[p] for p in ("cpu", "gpu") if p in components]
    measured = bool(compute) and all(c["measured"] for c in compute)
    descriptions = [components[p]["description"] for p in ("cpu", "gpu", "ram")
                    if p in components and "description" in components[p]]
    if not descriptions:
        method = (f"estimated: CodeCarbon {version} did not say how (its internals changed); "
                  "treat the figure as an estimate")
    elif measured:
        method = "measured: " + " + ".join(descriptions)
    else:
        method = "estimated: " + " + ".join(descriptions) + "; no hardware counters read"
    return {"measured": measured, "method": method, "components": components,
            "codecarbon_version": version}


def _describe(hardware, tracker, data):
    """(part, record) for one CodeCarbon hardware object."""
    kind = type(hardware).__name__
    if kind == "CPU":
        return "cpu", _describe_cpu(hardware, tracker, data)
    if kind == "RAM":
        forced = getattr(hardware, "_force_ram_power", None)
        tracker_name = (f"user-given constant ({forced} W)" if forced is not None
                        else "CodeCarbon RAM model")
        watts = _number(getattr(data, "ram_power", None))
        return "ram", {"tracker": tracker_name, "measured": False,
                       "description": f"RAM model ({_watts(watts)})" if forced is None
                       else f"RAM constant ({forced} W)"}
    if kind == "GPU":
        model = getattr(data, "gpu_model", "") or "GPU"
        return "gpu", {"tracker": "NVML / AMD SMI power readings", "measured": True,
                       "model": model, "description": f"GPU power readings ({model})"}
    if kind in ("AppleSiliconChip", "Raspberry"):
        chip_part = str(getattr(hardware, "chip_part", "CPU")).lower()
        name = "Apple PowerMetrics" if kind == "AppleSiliconChip" else "Raspberry Pi PMIC"
        part = "gpu" if chip_part == "gpu" else ("ram" if chip_part == "ram" else "cpu")
        model = str(getattr(hardware, "_model", "") or kind)
        return part, {"tracker": name, "measured": True, "model": model,
                      "description": f"{name} ({model} {chip_part.upper()})"}
    return kind.lower(), {"tracker": f"unknown CodeCarbon hardware {kind}", "measured": False}


def _describe_cpu(cpu, tracker, data):
    mode = str(getattr(cpu, "_mode", "unknown"))
    model = str(getattr(cpu, "_model", None) or getattr(data, "cpu_model", None) or "unknown CPU")
    record = {"model": model}
    if mode in _COUNTER_MODES:
        record.update(tracker=_COUNTER_MODES[mode], measured=True, tdp_w=None,
                      description=f"{_COUNTER_MODES[mode]} (CPU: {model})")
        return record
    tdp = _number(getattr(cpu, "_tdp", None))
    source = _tdp_source(cpu, tracker, model)
    record.update(measured=False, tdp_w=tdp, tdp_source=source)
    if mode == "cpu_load":
        record["tracker"] = "CodeCarbon CPU-load model"
        record["description"] = (f"CodeCarbon CPU-load model ({model}, {_watts(tdp)}: {source}; "
                                 "x CPU load, at least 10%)")
    elif mode == "constant":
        record["tracker"] = "CodeCarbon constant"
        record["description"] = f"CodeCarbon constant (50% of {_watts(tdp)} for {model}: {source})"
    else:
        record["tracker"] = f"CodeCarbon mode {mode!r}"
        record["description"] = f"CodeCarbon mode {mode!r} ({model}, {_watts(tdp)}: {source})"
    return record


def _tdp_source(cpu, tracker, model):
    """Where CodeCarbon's CPU wattage came from, in words."""
    if getattr(tracker, "_force_cpu_power", None) is not None:
        return "given by force_cpu_power"
    if getattr(cpu, "_is_generic_tdp", False):
        return "CodeCarbon's generic default, the CPU model is unknown"
    try:
        from codecarbon.core import cpu as codecarbon_cpu
        from codecarbon.core.hardware_cache import get_cached_tdp

        in_table = get_cached_tdp(codecarbon_cpu)._get_cpu_power_from_registry(model)
        per_thread = getattr(codecarbon_cpu, "DEFAULT_POWER_PER_CORE", None)
    except Exception:  # noqa: BLE001 -- other CodeCarbon versions: say what is known
        return "CodeCarbon's TDP table or its per-thread default"
    if in_table:
        return f"TDP {in_table:g} W per socket from CodeCarbon's table"
    return (f"CodeCarbon's default of {per_thread} W per thread, the model is not in its TDP "
            "table")


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _watts(value):
    return "? W" if value is None else f"{value:g} W"


def _codecarbon_version():
    try:
        from codecarbon import __version__
    except ImportError:
        return "unknown"
    return str(__version__)
