import pytest

from keras_effattn.training import report

ESTIMATED = {
    "available": True, "reason": None, "energy_kwh": 3.8e-06, "emissions_kg_co2": 2.1e-07,
    "country_iso_code": "FRA", "measured": False,
    "method": "estimated: CodeCarbon CPU-load model (AMD EPYC, 8 W: CodeCarbon's default of 4 W "
              "per thread, the model is not in its TDP table; x CPU load, at least 10%) + RAM "
              "model (20 W); no hardware counters read",
}


def test_energy_rows_give_the_figure_and_how_it_was_obtained():
    rows = dict(report.energy_rows(ESTIMATED))
    assert rows["energy"] == "3.8e-06 kWh, 2.1e-07 kg CO2 (FRA grid), estimated"
    assert rows["energy method"] == ESTIMATED["method"]
    measured = dict(report.energy_rows({**ESTIMATED, "measured": True,
                                        "method": "measured: RAPL energy counters"}))
    assert measured["energy"].endswith(", measured")


@pytest.mark.parametrize("energy, text", [
    ({"available": False, "reason": "codecarbon failed to stop: RuntimeError: x"},
     "not measured (codecarbon failed to stop: RuntimeError: x)"),
    (None, "not measured (no energy record)"),
], ids=["failed", "missing"])
def test_energy_rows_give_no_figure_when_nothing_was_measured(energy, text):
    assert report.energy_rows(energy) == [("energy", text)]


def test_an_old_record_without_a_method_counts_as_estimated():
    old = {k: ESTIMATED[k] for k in ("available", "energy_kwh", "emissions_kg_co2",
                                     "country_iso_code")}
    rows = dict(report.energy_rows(old))
    assert rows["energy"].endswith(", estimated")
    assert rows["energy method"].startswith("estimated")


def test_energy_rows_wrap_for_a_fixed_width_table():
    rows = report.energy_rows(ESTIMATED, width=60)
    assert all(len(text) <= 60 for _, text in rows)
    assert [label for label, _ in rows[:2]] == ["energy", "energy method"]
    assert {label for label, _ in rows[2:]} == {""}
    assert " ".join(text for _, text in rows[1:]) == ESTIMATED["method"]


def _results(energy):
    inference = {"latency_ms_per_sample": 1.0, "samples_per_s": 1000.0}
    return {
        "evaluation": {"accuracy": 0.9, "macro_f1": 0.9, "loss": 0.3, "num_examples": 10,
                       "confusion_matrix": [[5, 0], [1, 4]], "inference": inference},
        "training": {"num_examples": 20, "epochs_run": 1, "train_seconds": 2.0,
                     "train_samples_per_s": 10.0},
        "peak_host_rss_mb": 100.0, "wall_seconds": 3.0, "energy": energy,
    }


def test_markdown_report_says_how_energy_was_obtained_or_why_not():
    text = report.markdown_report(_results(ESTIMATED), {"name": "r"})
    assert "| energy | 3.8e-06 kWh, 2.1e-07 kg CO2 (FRA grid), estimated |" in text
    assert f"| energy method | {ESTIMATED['method']} |" in text
    failed = report.markdown_report(_results({"available": False, "reason": "disabled"}), {})
    assert "| energy | not measured (disabled) |" in failed
