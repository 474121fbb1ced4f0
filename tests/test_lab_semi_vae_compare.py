"""Issue 17, library side: the semi-supervised chart's series per source and the too-short note, the VAE
traversals' informative dimensions and KL labels, the Compare table's display (no None, readable counts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aecore.data import load_dataset
from aecore.lab import compare, semi
from aecore.lab import vae as vl
from aecore.models import build_model
from aecore.viz import image_grid


# --- semi-supervised: one series per (method, source); short runs named -----------------------------
def semi_model(ref: str, labels: int, *, epochs: int, seen: int, params: int = 150_000,
               **accuracies) -> semi.SemiModel:
    history = [{"epoch": e + 1, "stage": "train"} for e in range(epochs)]
    metrics = {"training": {"history": history, "images_seen": seen}, "parameters": params, **accuracies}
    recipe = {"epochs": epochs, "labels": labels, **({"train_images": seen // epochs} if ref.startswith("user:") else {})}
    return semi.SemiModel(ref=ref, label=ref.split("/")[-1].split(":")[-1], labels=labels, budget=labels,
                          metrics=metrics, recipe=recipe)


ALL = dict(accuracy=0.97, scratch_cnn_accuracy=0.76, pca_logreg_accuracy=0.74)
PRETRAINED = [semi_model("mnist/hyper-semi-100", 100, epochs=4, seen=256_544, **ALL),
              semi_model("mnist/hyper-semi-1000", 1000, epochs=4, seen=256_544, **ALL)]
SHORT = semi_model("user:fresh", 100, epochs=1, seen=2_250, params=41_000,
                   accuracy=0.34, scratch_cnn_accuracy=0.785, pca_logreg_accuracy=0.6)
LONG = semi_model("user:long", 100, epochs=4, seen=240_000, **ALL)


def test_sources():
    assert [m.source for m in (*PRETRAINED, SHORT)] == [semi.PRETRAINED] * 2 + [semi.APP_RUN]


def test_a_fresh_run_and_the_pretrained_points_are_separate_series():
    models = [*PRETRAINED, SHORT]
    rows = semi.accuracy_rows(models)
    assert {(r["source"], r["series"]) for r in rows} == {(semi.PRETRAINED, semi.PRETRAINED), (semi.APP_RUN, "fresh")}
    fig = semi.accuracy_figure(rows, short={"fresh"})
    traces = {t.name: t for t in fig.data}
    assert len(traces) == 6                        # 3 methods x 2 sources, each its own trace
    for key in semi.METHODS:
        pre = traces[semi.series_name(key, semi.PRETRAINED)]
        run = traces[semi.series_name(key, "fresh") + " (too short to compare)"]
        assert list(pre.x) == [100, 1000] and list(run.x) == [100]    # never one line through both sources
        assert pre.mode == run.mode == "lines+markers"
        assert pre.line.color == run.line.color == semi.COLOURS[key]   # colour = method
        assert pre.line.dash == "solid" and run.line.dash != "solid"   # style = source
        assert not pre.marker.symbol.endswith("-open") and run.marker.symbol.endswith("-open")
        assert pre.legendgroup != run.legendgroup
    assert fig.layout.showlegend


def test_two_app_runs_are_two_series_with_different_dashes():
    other = semi_model("user:other", 10, epochs=1, seen=2_000, accuracy=0.2)
    fig = semi.accuracy_figure(semi.accuracy_rows([*PRETRAINED, SHORT, other]))
    hyper = [t for t in fig.data if t.name.startswith(semi.SEMI_MODEL + " ·")]
    assert [(t.name, list(t.x)) for t in hyper] == [(f"{semi.SEMI_MODEL} · pretrained", [100, 1000]),
                                                    (f"{semi.SEMI_MODEL} · fresh", [100]),
                                                    (f"{semi.SEMI_MODEL} · other", [10])]
    assert len({t.line.dash for t in hyper}) == 3


def test_a_short_run_is_named_too_short_and_a_long_one_is_not():
    why = semi.shortfall(SHORT, [*PRETRAINED, SHORT])
    assert why == ("1 epoch of 2,250 images (2,250 images seen, 41,000 parameters), against 4 epochs "
                   "(256,544 images seen, 150,000 parameters) for the pretrained ones")
    assert semi.shortfall(LONG, [*PRETRAINED, LONG]) is None          # same epochs, >= 80 % of the images
    # as many epochs on far fewer images is short too; so is fewer epochs on as many images
    assert semi.shortfall(semi_model("user:few", 100, epochs=4, seen=20_000), PRETRAINED)
    assert semi.shortfall(semi_model("user:ep", 100, epochs=2, seen=300_000), PRETRAINED)
    # nothing to compare with: no pretrained model, or a pretrained model itself
    assert semi.shortfall(SHORT, [SHORT]) is None
    assert semi.shortfall(PRETRAINED[0], PRETRAINED) is None


def test_reading_the_shipped_recipe():
    """The real pretrained hyper-semi folders record 4 epochs and 256,544 images seen."""
    from aecore.paths import pretrained_dir

    folder = pretrained_dir() / "mnist" / "hyper-semi-100"
    if not folder.is_dir():
        pytest.skip("no pretrained hyper-semi model here")
    model = semi.read_semi_model("mnist/hyper-semi-100", "hyper-semi-100")
    scale = semi.training_scale(model)
    assert scale.epochs == 4 and scale.images_seen > 200_000
    assert semi.shortfall(SHORT, [model, SHORT]) is not None


# --- VAE: informative dimensions first, rows named with their KL -------------------------------------
def tiny_vae():
    torch.manual_seed(0)
    return build_model("vae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 5}).eval()


def test_informative_dims_and_labels():
    kl = np.array([0.0, 2.31, vl.INFORMATIVE_KL, 0.5, 0.03])
    assert 0.01 <= vl.INFORMATIVE_KL <= 0.05
    assert vl.informative_dims(kl) == [1, 3, 4]                  # above the threshold, most KL first
    assert vl.informative_dims(np.zeros(4)) == []
    assert vl.traversal_rows(kl, limit=None) == [1, 3, 4, 2, 0]  # "all": every dimension
    assert vl.dim_label(1, kl) == "z1 · 2.31 nats" and vl.dim_label(0, kl) == "z0 · 0.00 nats"


def test_traversal_grid_names_each_row():
    model = tiny_vae()
    x = load_dataset("digits", "test").as_float(slice(0, 1))
    values = vl.traversal_values(2.0, 5)
    dims = [3, 0]
    images = vl.traversal(model, x, dims, values)
    kl = np.array([0.1, 0.0, 0.0, 1.5, 0.0])
    grid = vl.traversal_grid(images, dims, kl, scale=2)
    bare = image_grid(images, nrow=5, scale=2)
    assert grid.shape[0] == bare.shape[0] and grid.shape[1] > bare.shape[1]      # a label column on the left
    assert (grid[:, -bare.shape[1]:] == bare).all()
    labels = grid[:, : grid.shape[1] - bare.shape[1]]
    top, bottom = labels[: labels.shape[0] // 2], labels[labels.shape[0] // 2:]
    assert (top < 128).any() and (bottom < 128).any()                            # text beside both rows
    with pytest.raises(Exception, match="equal rows"):
        vl.traversal_grid(images[:7], dims, kl)


def test_kl_chart_splits_at_the_same_threshold():
    kl = np.array([0.0, 2.31, 0.01, 0.5])
    fig = vl.kl_figure(kl)
    bars = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    informative = next(v for k, v in bars.items() if k.startswith("informative"))
    assert informative[0] == ["z1", "z3"]
    assert bars["≈ no information"][0] == ["z0", "z2"]
    assert fig.layout.shapes[0].y0 == vl.INFORMATIVE_KL


def test_kl_over_the_whole_split():
    model = tiny_vae()
    data = load_dataset("digits", "test")
    every = vl.kl_per_dim(model, data, limit=None)
    assert every.shape == (5,)
    np.testing.assert_allclose(every, vl.kl_per_dim(model, data, limit=len(data)))


# --- Compare: the shown table --------------------------------------------------------------------------
@pytest.mark.parametrize("n, text", [(0, "0"), (950, "950"), (1_000, "1.00 k"), (12_345, "12.3 k"),
                                     (241_234, "241 k"), (999_999, "1.00 M"), (1_081_000, "1.08 M"),
                                     (2_500_000_000, "2.50 G")])
def test_human_counts(n, text):
    assert compare.human_count(n) == text


def small(name: str, **config):
    torch.manual_seed(0)
    return build_model(name, dict(config, input_shape=[1, 8, 8])).eval()


def test_table_has_no_none_and_readable_counts():
    digits = load_dataset("digits", "test")
    result = compare.compare({"ae": small("ae", hidden=[64], latent_dim=4)}, digits, n_shown=3, n_eval=30,
                             noise="gaussian:0.3")
    assert any(v is None for v in result.rows[0].values())        # the raw rows (and the CSV) keep None
    table, left_out = compare.display_rows(result.rows)
    assert left_out == ["target"] and all("target" not in row for row in table)
    cells = [v for row in table for v in row.values()]
    assert None not in cells and not any(str(v) in ("None", "nan") for v in cells)
    noisy, model = table
    assert noisy["parameters"] == noisy["code size"] == noisy["code sparsity"] == compare.NOT_APPLICABLE
    params = result.rows[1]["parameters"]
    assert model["parameters"] == compare.human_count(params) and model["parameters"].endswith(" k")
    assert model["code size"] == "4" and model["code sparsity"].endswith(" %")
    assert isinstance(model["MSE"], float) and isinstance(model["PSNR (dB)"], float)
    assert math.isclose(model["MSE"], result.rows[1]["MSE"], rel_tol=1e-4)


def test_target_column_stays_when_a_segmenter_is_there():
    digits = load_dataset("digits", "test")
    result = compare.compare({"ae": small("ae", hidden=[8], latent_dim=2),
                              "seg": small("unet", base_channels=4, depth=1, task="segment")}, digits,
                             n_shown=2, n_eval=10)
    table, left_out = compare.display_rows(result.rows)
    assert left_out == [] and [r["target"] for r in table] == ["clean image", "foreground mask"]


def test_labelled_grid_names_the_rows():
    digits = load_dataset("digits", "test")
    result = compare.compare({"a": small("ae", hidden=[8], latent_dim=2)}, digits, n_shown=6, n_eval=10)
    bare = compare.full_grid(result, scale=3)
    named = compare.labelled_grid(result, scale=3)
    assert named.shape[0] == bare.shape[0] and named.shape[1] > bare.shape[1]
    wrapped = compare.labelled_grid(result, scale=3, per_band=3)                 # two bands of 3 images
    assert wrapped.shape[0] > 2 * bare.shape[0] - 10
