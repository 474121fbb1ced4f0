"""Compare: aecore.lab.compare on small models, and the page through AppTest with the tiny zoo."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.errors import ConfigError
from aecore.evaluate import per_image_mse, psnr
from aecore.lab import compare
from aecore.models import build_model
from tests.helpers import open_app


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test")


def small(name: str, **config):
    torch.manual_seed(0)
    return build_model(name, dict(config, input_shape=[1, 8, 8])).eval()


# --- aecore.lab.compare ---------------------------------------------------------------------------
def test_every_model_gets_the_same_images_and_the_same_noise(digits):
    models = {"ae": small("ae", hidden=[16], latent_dim=4), "sparse": small("sparse-ae", latent_dim=12)}
    a = compare.compare(models, digits, n_shown=5, n_eval=50, seed=3, noise="masking:0.5")
    b = compare.compare(models, digits, n_shown=5, n_eval=50, seed=3, noise="masking:0.5")
    assert torch.equal(a.clean, b.clean) and torch.equal(a.noisy, b.noisy)
    assert a.clean.shape == (5, 1, 8, 8) and a.n_eval == 50
    assert [r.output.shape for r in a.results] == [(5, 1, 8, 8)] * 2
    assert a.rows[0]["model"] == "corrupted input (no model)" and [r["model"] for r in a.rows[1:]] == ["ae", "sparse"]
    # exactly round(0.5 * 64) pixels of each shown image are masked (where they were not 0 already)
    assert ((a.noisy == 0) | (a.clean == 0)).flatten(1).sum(1).ge(32).all()
    other = compare.compare(models, digits, n_shown=5, n_eval=50, seed=4, noise="masking:0.5")
    assert not torch.equal(a.clean, other.clean)


def test_table_numbers_match_a_direct_computation(digits):
    model = small("sparse-ae", latent_dim=12)   # ReLU code: some entries exactly 0
    result = compare.compare({"sparse": model}, digits, n_shown=4, n_eval=40, seed=1)
    clean = compare.sample(digits, 40, 1)
    with torch.no_grad():
        out = model.reconstruct(clean)
        z = model.encode(clean)
    row = result.rows[0]
    assert row["MSE"] == pytest.approx(float(per_image_mse(out, clean).mean()), rel=1e-5)
    assert row["PSNR (dB)"] == pytest.approx(float(psnr(out, clean).mean()), rel=1e-5)
    assert row["code sparsity"] == pytest.approx(float((z == 0).float().mean()), abs=1e-6)
    assert 0 < row["code sparsity"] < 1
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert row["code size"] == 12 and row["target"] == "clean image"
    assert torch.allclose(result.results[0].output, out[:4])


def test_grid_stacks_input_noise_and_model_rows(digits):
    models = {"a": small("ae", hidden=[8], latent_dim=2), "b": small("linear-ae", latent_dim=3)}
    result = compare.compare(models, digits, n_shown=6, n_eval=20, noise="gaussian:0.3")
    labels = [label for label, _ in compare.grid_rows(result)]
    assert labels == ["input", "corrupted input", "a", "b"]
    grid = compare.full_grid(result, scale=1)
    # 4 rows x 6 columns of 8 px images with 2 px padding
    assert grid.shape == (4 * 10 + 2, 6 * 10 + 2, 3) and grid.dtype.name == "uint8"
    clean_only = compare.compare(models, digits, n_shown=6, n_eval=20)
    assert [label for label, _ in compare.grid_rows(clean_only)] == ["input", "a", "b"]
    assert all(r["model"] != "corrupted input (no model)" for r in clean_only.rows)


def test_segmenter_is_scored_against_the_foreground_mask(digits):
    unet = small("unet", base_channels=4, depth=1, task="segment")
    result = compare.compare({"seg": unet}, digits, n_shown=2, n_eval=10)
    assert result.rows[0]["target"] == "foreground mask"
    assert result.results[0].output.shape == (2, 1, 8, 8)


def test_bad_requests_are_config_errors(digits):
    mnist_model = build_model("ae", {"input_shape": [1, 28, 28], "hidden": [8], "latent_dim": 2})
    with pytest.raises(ConfigError, match=r"takes inputs of shape \[1, 28, 28\]"):
        compare.compare({"mnist": mnist_model}, digits, n_shown=2)
    with pytest.raises(ConfigError, match="at least one model"):
        compare.compare({}, digits)
    with pytest.raises(ConfigError, match="images shown must be between 1 and 32"):
        compare.compare({"a": small("ae", hidden=[8], latent_dim=2)}, digits, n_shown=64)


# --- the page ---------------------------------------------------------------------------------------
def page(query: dict) -> AppTest:
    return open_app("compare.py", query, timeout=60)


def test_two_tiny_models_side_by_side_with_noise(tiny_zoo, monkeypatch):
    drawn = []
    original = compare.labelled_grid
    monkeypatch.setattr(compare, "labelled_grid", lambda result, **kw: drawn.append(
        ([label for label, _ in compare.grid_rows(result)], kw)) or original(result, **kw))
    at = page({"models": "mnist/ae-d8,mnist/dae-gaussian"})
    assert not at.exception and not at.error
    assert at.multiselect(key="cmp_models").value == ["mnist/ae-d8", "mnist/dae-gaussian"]
    assert len(at.get("image")) == 1                            # one grid, its rows named on the picture
    assert drawn[-1][0] == ["input", "ae-d8", "dae-gaussian"]
    assert drawn[-1][1]["scale"] * 28 == 56 and drawn[-1][1]["per_band"] == 8
    table = at.dataframe[0].value
    assert list(table["model"]) == ["ae-d8", "dae-gaussian"]
    assert set(table.columns) == set(compare.COLUMNS) - {"target"}     # every output is scored on the clean image
    assert (table["code size"] == "8").all() and (table["MSE"] > 0).all()
    assert all(cell.endswith(" k") for cell in table["parameters"])   # '58.2 k', not 58186
    caption = " ".join(c.value for c in at.caption)
    assert "no *target* column" in caption and "k = thousand" in caption
    at.selectbox(key="cmp_noise").set_value("gaussian").run()
    assert not at.exception
    assert drawn[-1][0] == ["input", "corrupted input", "ae-d8", "dae-gaussian"]
    table = at.dataframe[0].value
    assert table["model"][0] == "corrupted input (no model)"
    # no 'None' anywhere: what does not apply to the corrupted input reads '—', and the caption says why
    assert not table.isna().any().any() and "None" not in table.astype(str).to_numpy()
    assert [table[c][0] for c in ("code sparsity", "parameters", "code size")] == [compare.NOT_APPLICABLE] * 3
    assert "the corrupted input is no model" in " ".join(c.value for c in at.caption)
    # the denoiser trained on sigma = 0.5 beats the corrupted input it was given
    assert table["PSNR (dB)"][2] > table["PSNR (dB)"][0]
    assert at.query_params["cmp_noise"] == "gaussian"
    assert at.query_params["models"] == "mnist/ae-d8,mnist/dae-gaussian"


def test_projector_mode_gives_big_tiles_in_bands(tiny_zoo, monkeypatch):
    drawn = []
    original = compare.labelled_grid
    monkeypatch.setattr(compare, "labelled_grid", lambda result, **kw: drawn.append(kw) or original(result, **kw))
    at = page({"models": "mnist/ae-d8,mnist/dae-gaussian", "projector": "1", "cmp_n": "10"})
    assert not at.exception and not at.error
    assert drawn[-1]["scale"] * 28 >= 140 and drawn[-1]["per_band"] == 4     # even bands of PROJECTOR_PER_ROW (4)


def test_empty_selection_and_unknown_models_in_the_link(tiny_zoo):
    at = page({"models": "mnist/nope,../etc"})
    assert not at.exception
    assert at.multiselect(key="cmp_models").value[0] == at.selectbox(key="model").value  # fell back to the sidebar's
    at.multiselect(key="cmp_models").set_value([]).run()
    assert not at.exception
    assert "Choose at least one model" in at.info[0].value
    assert not at.dataframe
