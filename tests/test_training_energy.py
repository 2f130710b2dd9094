import pytest

from keras_effattn.training.energy import EnergyMeter


def test_disabled_meter_reports_why():
    with EnergyMeter(enabled=False) as meter:
        pass
    assert meter.result["available"] is False
    assert meter.result["reason"] == "disabled"
    assert meter.result["duration_s"] >= 0


def test_offline_tracker_measures_or_says_why():
    with EnergyMeter(country_iso_code="fra", measure_power_secs=1) as meter:
        sum(i * i for i in range(300_000))
    result = meter.result
    assert result["country_iso_code"] == "FRA"
    if result["available"]:
        assert result["energy_kwh"] >= 0 and result["emissions_kg_co2"] >= 0
        assert result["reason"] is None
    else:
        assert result["reason"]  # never silent


@pytest.mark.parametrize("kwargs, match", [({"country_iso_code": "France"}, "three-letter"),
                                           ({"measure_power_secs": 0}, "positive")],
                         ids=["country", "interval"])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyMeter(**kwargs)
