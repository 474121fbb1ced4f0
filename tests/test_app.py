"""App pages through streamlit's AppTest (no browser): widgets set, outputs asserted, no exceptions."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def run_page(page: str, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=timeout)
    return at.run()


def test_home_shows_bundled_data_and_models():
    at = run_page("home.py")
    assert not at.exception
    assert at.title[0].value.startswith("aecore")
    assert at.selectbox(key="dataset").value == "mnist"
    assert len(at.get("image")) == 1
    assert "10,000" in at.get("image")[0].captions[0]
    models_table = at.table[0]
    assert "vae" in str(models_table.value)


@pytest.mark.parametrize("dataset", ["fashion-mnist", "digits"])
def test_home_switches_dataset(dataset):
    at = run_page("home.py")
    at.selectbox(key="dataset").set_value(dataset).run()
    assert not at.exception and not at.error
    assert dataset in at.get("image")[0].captions[0]


def test_app_entry_point_runs():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
