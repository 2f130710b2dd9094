import math

import pytest

from keras_effattn.training.energy import EnergyMeter, provenance


def test_disabled_meter_reports_why():
    with EnergyMeter(enabled=False) as meter:
        pass
    assert meter.result["available"] is False
    assert meter.result["reason"] == "disabled"
    assert meter.result["method"] == "not measured: disabled"
    assert meter.result["energy_kwh"] is None
    assert meter.result["duration_s"] >= 0


def test_stop_is_idempotent_and_safe_before_start():
    meter = EnergyMeter(enabled=False)
    assert meter.stop() is None  # never started: nothing to stop
    meter.start()
    assert meter.running
    first = meter.stop()
    assert not meter.running
    assert meter.stop() is first


def test_real_offline_tracker_gives_a_positive_figure_and_its_provenance(capfd):
    """CodeCarbon is a dependency: a real run must give a figure and say how it got it."""
    pytest.importorskip("codecarbon")
    with EnergyMeter(country_iso_code="fra", measure_power_secs=1) as meter:
        sum(i * i for i in range(300_000))
    result = meter.result
    assert "[codecarbon" not in capfd.readouterr().err  # no start-up log lines
    assert result["available"] is True, result["reason"]
    assert result["reason"] is None
    assert result["country_iso_code"] == "FRA"
    assert result["energy_kwh"] > 0 and math.isfinite(result["energy_kwh"])
    assert result["emissions_kg_co2"] > 0
    assert isinstance(result["measured"], bool)
    cpu = result["components"]["cpu"]
    assert cpu["model"] and cpu["tracker"] and cpu["measured"] is result["measured"]
    assert result["components"]["ram"]["measured"] is False  # CodeCarbon models memory
    if result["measured"]:
        assert result["method"].startswith("measured: ") and "counters" in result["method"]
    else:  # TDP-based: the CPU model and the watts it used are named
        assert result["method"].startswith("estimated: ")
        assert cpu["model"] in result["method"]
        assert cpu["tdp_w"] > 0 and f"{cpu['tdp_w']:g} W" in result["method"]
        assert cpu["tdp_source"]


class _Data:
    def __init__(self, energy=2e-6, emissions=1e-7):
        self.energy_consumed, self.emissions = energy, emissions
        self.cpu_power, self.cpu_energy, self.ram_power, self.ram_energy = 5.0, 1e-6, 20.0, 1e-6
        self.cpu_model, self.codecarbon_version = "Test CPU 9000", "9.9"


def _fake_tracker(monkeypatch, start_error=None, stop_error=None, data=None):
    codecarbon = pytest.importorskip("codecarbon")

    class Tracker:
        def __init__(self, **kwargs):
            self.final_emissions_data = None

        def start(self):
            if start_error:
                raise start_error

        def stop(self):
            if stop_error:
                raise stop_error
            self.final_emissions_data = data
            return None if data is None else data.emissions

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Tracker)


@pytest.mark.parametrize("kwargs, reason", [
    ({"start_error": OSError("no counters")}, "failed to start: OSError: no counters"),
    ({"stop_error": RuntimeError("thread died")}, "failed to stop: RuntimeError: thread died"),
    ({"data": _Data(energy=0.0)}, "no energy figure"),
    ({"data": _Data(energy=float("nan"))}, "no energy figure"),
], ids=["start_fails", "stop_fails", "zero_energy", "nan_energy"])
def test_a_failing_tracker_is_reported_as_failed_not_as_a_figure(monkeypatch, kwargs, reason):
    _fake_tracker(monkeypatch, **kwargs)
    with EnergyMeter() as meter:
        pass
    result = meter.result
    assert result["available"] is False
    assert reason in result["reason"]
    assert result["method"] == f"failed: {result['reason']}"
    assert result["energy_kwh"] is None and result["emissions_kg_co2"] is None
    assert result["measured"] is False


class CPU:  # named like CodeCarbon's hardware classes, which `provenance` reads
    def __init__(self, mode, tdp=None, model="Test CPU 9000"):
        self._mode, self._tdp, self._model, self._is_generic_tdp = mode, tdp, model, False


class RAM:
    _force_ram_power = None


class _Tracker:
    _force_cpu_power = None

    def __init__(self, *hardware):
        self._hardware = list(hardware)


def test_provenance_says_measured_only_for_hardware_counters():
    measured = provenance(_Tracker(RAM(), CPU("intel_rapl")), _Data())
    assert measured["measured"] is True
    assert measured["method"].startswith("measured: RAPL energy counters (CPU: Test CPU 9000)")
    assert "RAM model (20 W)" in measured["method"]

    tracker = _Tracker(RAM(), CPU("constant", tdp=85))
    tracker._force_cpu_power = 85
    constant = provenance(tracker, _Data())
    assert constant["measured"] is False
    assert constant["method"] == (
        "estimated: CodeCarbon constant (50% of 85 W for Test CPU 9000: given by "
        "force_cpu_power) + RAM model (20 W); no hardware counters read")
    assert constant["components"]["cpu"]["mean_power_w"] == 5.0

    unknown = provenance(_Tracker(), _Data())  # internals without the expected hardware list
    assert unknown["measured"] is False
    assert unknown["method"].startswith("estimated: CodeCarbon 9.9 did not say how")


@pytest.mark.parametrize("kwargs, match", [({"country_iso_code": "France"}, "three-letter"),
                                           ({"measure_power_secs": 0}, "positive")],
                         ids=["country", "interval"])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyMeter(**kwargs)
