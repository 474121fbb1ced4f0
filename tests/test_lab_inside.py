"""aecore.lab.inside / hyper / sparsity: filter shapes per family, the hypernetwork explorer, sparsity maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aecore.errors import ConfigError
from aecore.lab import hyper, inside
from aecore.lab import sparsity as sp
from aecore.models import build_model, get_model_class, list_models
from aecore.models.base import AutoEncoder
from aecore.models.contractive_ae import jacobian_frobenius_sq
from aecore.pca import PCA

SHAPE = (1, 12, 12)
D = 144


def small(name: str, shape=SHAPE, **overrides):
    cfg = get_model_class(name).small_config(shape).to_dict()
    cfg.update(overrides)
    return build_model(name, cfg).eval()


# --- filters -------------------------------------------------------------------------------------
EXPECTED = {  # family -> {view: number of filters} for small_config on SHAPE (overrides below)
    "ae": {inside.ENCODER: 32, inside.DECODER: 32},
    "linear-ae": {inside.ENCODER: 8, inside.DECODER: 8},
    "sparse-ae": {inside.ENCODER: 16, inside.DECODER: 16},
    "contractive-ae": {inside.ENCODER: 8, inside.DECODER: 8},
    "vae": {inside.ENCODER: 32, inside.DECODER: 32},
    "stacked-ae": {inside.TIED: 16},
    "rank-ordered-ae": {inside.TIED: 8},
    "hyper-ae": {inside.ENCODER: 32, inside.DECODER: 32},
    "hyper-ae-vanilla": {inside.ENCODER: 32, inside.DECODER: 32},
}


@pytest.mark.parametrize("name", sorted(list_models()))
def test_filters_shapes_for_every_family(name):
    model = small(name)
    found = inside.filters(model)
    assert isinstance(found, dict) and found, found
    for key, f in found.items():
        assert f.dim() == 4 and f.shape[1] == SHAPE[0], (key, f.shape)
        assert torch.isfinite(f).all()
    if name in EXPECTED:                                # the counts, for the families written out above
        assert {k: f.shape[0] for k, f in found.items()} == EXPECTED[name]
    for key, f in found.items():                        # any family, a new one too: by what the view is
        if key in (inside.ENCODER, inside.DECODER, inside.TIED):
            assert tuple(f.shape[1:]) == SHAPE, key     # one weight per input pixel, laid out as the image
        else:
            assert tuple(f.shape[2:]) == (3, 3), key    # conv kernels


def test_filters_are_the_weights_themselves():
    ae = small("ae")
    found = inside.filters(ae)
    assert torch.equal(found[inside.ENCODER].reshape(32, D), ae.encoder[0].weight)
    assert torch.equal(found[inside.DECODER].reshape(32, D), ae.decoder[-1].weight.t())
    ro = small("rank-ordered-ae")
    assert torch.equal(inside.filters(ro)[inside.TIED].reshape(8, D), ro.weight.t())
    conv = small("conv-ae")
    assert torch.equal(inside.filters(conv)[inside.ENCODER_KERNELS], conv.encoder.features[0].weight)
    h = small("hyper-ae")
    assert torch.allclose(inside.filters(h)[inside.ENCODER].reshape(32, D), h.generated_weights()["encoder.0.weight"])
    semi = small("hyper-semi")
    assert torch.equal(inside.filters(semi)[inside.ENCODER_KERNELS], semi.generated_weights()["encoder.conv.0.weight"])


def test_filters_not_applicable_says_why():
    class Opaque(AutoEncoder):
        registry_name = "opaque"

        def __init__(self, config):
            super().__init__(config=config)
            self.inner = nn.Linear(5, 3)       # never reads the 144-pixel input

    from aecore.config import ModelConfig
    reason = inside.filters(Opaque(ModelConfig(input_shape=SHAPE)))
    assert isinstance(reason, str) and "no layer that reads the input" in reason


def test_normalise_per_filter_and_grid():
    f = torch.tensor([[[[2.0, -1.0], [0.0, 1.0]]], [[[0.1, 0.0], [-0.05, 0.0]]]])   # (2, 1, 2, 2)
    n = inside.normalise(f)
    assert n[0, 0, 0, 0] == 1.0 and n[0, 0, 1, 0] == 0.5 and n[0, 0, 0, 1] == 0.25
    assert n[1, 0, 0, 0] == 1.0 and n[1, 0, 1, 0] == 0.25          # scaled on its own, not by the first's max
    grid = inside.filter_grid(f, per_filter=True)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    shared = inside.filter_grid(f, per_filter=False)
    assert shared.shape == grid.shape and not np.array_equal(shared, grid)


def test_code_unit_filters_only_for_one_layer_codes():
    sparse = small("sparse-ae")                       # hidden = (): the code is the first layer
    units = inside.code_unit_filters(sparse)
    assert units.shape == (16, *SHAPE) and torch.equal(units.reshape(16, D), sparse.encoder[0].weight)
    assert inside.code_unit_filters(small("rank-ordered-ae")).shape[0] == 8
    assert inside.code_unit_filters(small("ae")) is None                       # hidden layer before the code
    assert inside.code_unit_filters(small("ae", hidden=[8], latent_dim=8)) is None   # same width, still deeper
    assert inside.code_unit_filters(small("conv-ae")) is None


def test_stage_playback_of_the_tiny_stacked_ae(tiny_zoo):
    from aecore.store import load_pretrained

    loaded = load_pretrained("mnist/stacked-ae", device="cpu")
    stages = inside.stage_playback(loaded.model, loaded.metrics)
    assert [s.name for s in stages] == ["layer1", "layer2", "finetune"]
    assert all(s.filters.shape == (32, 1, 28, 28) for s in stages)
    assert stages[0].change is None
    assert stages[1].change == 0.0                     # layer 1 is frozen while layer 2 trains
    assert stages[2].change > 0                        # fine-tuning moves it again
    history = loaded.metrics["training"]["history"]
    assert sum(len(s.epochs) for s in stages) == len(history)
    assert stages[2].train_loss == [r["train"]["loss"] for r in history if r["stage"] == "finetune"]
    assert torch.equal(stages[-1].filters.reshape(32, -1), loaded.model.layers[0].weight)
    fig = inside.stage_loss_figure(stages[2])
    assert list(fig.data[0].y) == stages[2].train_loss


# --- hypernetwork ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hyper-ae", "hyper-semi"])
def test_explorer_at_t0_reproduces_the_model(name):
    model = small(name)
    x = torch.rand(8, *SHAPE)
    for mode in hyper.MODES:
        out = hyper.explore(model, x, t=0.0, mode=mode, seed=3)
        assert torch.allclose(out.recon, model.reconstruct(x), atol=1e-6)
        assert out.distance == 0.0
        assert torch.allclose(out.mse, ((out.recon - x) ** 2).flatten(1).mean(1))
    moved = hyper.explore(model, x, t=1.0, mode="interpolate", seed=3)
    assert not torch.allclose(moved.recon, model.reconstruct(x))
    assert torch.allclose(moved.embedding, hyper.random_embedding(model, 3))


def test_explorer_interpolates_to_the_other_embedding():
    model = small("hyper-ae")
    torch.manual_seed(5)
    other = build_model("hyper-ae", get_model_class("hyper-ae").small_config(SHAPE)).eval()
    e_other = hyper.other_embedding(model, other)
    x = torch.rand(4, *SHAPE)
    out = hyper.explore(model, x, t=1.0, mode="interpolate", other=e_other)
    expected = model.with_embedding(e_other)(x)       # this model's generator, the other's embedding
    assert torch.allclose(out.recon, expected, atol=1e-6)
    wider = build_model("hyper-ae", dict(get_model_class("hyper-ae").small_config(SHAPE).to_dict(), embedding_dim=4))
    with pytest.raises(ConfigError, match="generator takes"):
        hyper.other_embedding(model, wider)
    with pytest.raises(ConfigError, match="no hypernetwork"):
        hyper.explore(small("ae"), x, t=0.0)


def test_random_embedding_has_the_trained_norm_and_is_seeded():
    model = small("hyper-ae")
    a, b, c = hyper.random_embedding(model, 1), hyper.random_embedding(model, 1), hyper.random_embedding(model, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.norm(), model.embedding.norm())
    e = model.embedding.detach()
    assert torch.allclose(hyper.mix(e, a, 0.5, "interpolate"), (e + a) / 2)
    assert torch.allclose(hyper.mix(e, a, -2.0, "direction"), e - 2 * a)
    with pytest.raises(ConfigError, match="mode"):
        hyper.mix(e, a, 0.5, "sideways")


def test_parameter_counts_and_blocks():
    model = small("hyper-ae")
    counts = hyper.parameter_counts(model)
    twin_name, twin_cfg = model.vanilla_twin_config()
    twin = build_model(twin_name, twin_cfg)
    assert counts["hypernetwork"] == model.hyper_parameter_count() == model.num_parameters()
    assert counts["primary"] == twin.num_parameters() == model.primary_parameter_count()
    assert counts["embedding"] + counts["generator"] == counts["hypernetwork"] and counts["other"] == 0
    semi = hyper.parameter_counts(small("hyper-semi"))
    assert semi["other"] > 0                           # batch norm + classifier head are ordinary parameters
    blocks = hyper.blocks(model)
    assert blocks[0].name == "encoder.0.weight" and blocks[0].n_chunks == 32   # K = D: one chunk per filter
    assert sum(b.n_chunks for b in blocks) == model.embedding.shape[0]
    views = {v.name: v.kind for v in hyper.layer_views(model)}
    assert views == {"encoder.0.weight": "filters", "encoder.1.weight": "heatmap",
                     "decoder.0.weight": "heatmap", "decoder.1.weight": "filters"}
    assert hyper.embedding_figure(model, 33).data[0].y.shape == (model.embedding.shape[1],)
    with pytest.raises(ConfigError, match="out of range"):
        hyper.embedding_figure(model, 10_000)


# --- sparsity --------------------------------------------------------------------------------------
CODES = torch.tensor([[0.0, 1.0, 0.0, 2.0],
                      [0.0, 0.0, 0.0, 3.0],
                      [0.0, 0.005, 0.0, 0.0]])


def test_population_lifetime_and_dead_units_on_a_hand_made_code():
    s = sp.sparsity(CODES, 0.0)
    np.testing.assert_allclose(s.population, [0.5, 0.75, 0.75])
    np.testing.assert_allclose(s.lifetime, [0.0, 2 / 3, 0.0, 2 / 3])
    np.testing.assert_allclose(s.mean_activation, [0.0, 1.005 / 3, 0.0, 5 / 3], rtol=1e-6)
    assert s.dead.tolist() == [0, 2]
    t = sp.sparsity(CODES, 0.01)                        # 0.005 now counts as off
    np.testing.assert_allclose(t.population, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(t.lifetime, [0.0, 1 / 3, 0.0, 2 / 3])
    assert sp.sparsity(CODES, 5.0).dead.tolist() == [0, 1, 2, 3]
    assert sp.sparsity(-CODES, 0.0).dead.tolist() == [0, 2]    # |h|: signed codes are off only near 0
    with pytest.raises(ConfigError, match="threshold"):
        sp.sparsity(CODES, -1.0)
    with pytest.raises(ConfigError, match="matrix"):
        sp.sparsity(torch.zeros(0, 3))


def test_top_activating_and_thresholds_per_code():
    assert sp.top_activating(CODES, 3, 2).tolist() == [1, 0]
    assert sp.top_activating(CODES, 1, 5).tolist() == [0, 2, 1]
    with pytest.raises(ConfigError, match="out of range"):
        sp.top_activating(CODES, 4)
    assert sp.default_threshold(small("sparse-ae", penalty="kl")) == 0.01
    assert sp.target_rate(small("sparse-ae", penalty="kl", target_rate=0.1)) == 0.1
    assert sp.default_threshold(small("sparse-ae")) == 0.0 and sp.target_rate(small("sparse-ae")) is None
    assert sp.code_activation(small("rank-ordered-ae")) == "trelu"
    assert sp.default_threshold(small("contractive-ae")) == 0.01
    fig = sp.lifetime_figure(sp.sparsity(CODES), p=0.05)
    assert list(fig.data[0].marker.color) == ["#ef553b", "#636efa", "#ef553b", "#636efa"]  # dead in red
    assert sum(sp.activation_histogram(CODES, log=False).data[0].y) == CODES.numel()


def test_anytime_with_all_units_equals_reconstruct_and_pca_matches():
    torch.manual_seed(0)
    model = small("rank-ordered-ae", latent_dim=12, init_scale=3.0)
    train = torch.rand(200, *SHAPE)
    x = torch.rand(6, *SHAPE)
    pca = PCA.fit(train, sp.pca_components_for(model))
    out = sp.anytime_vs_pca(model, pca, x, model.n_units)
    assert torch.allclose(out["ranked"], model.reconstruct(x), atol=1e-6)
    assert torch.allclose(out["pca"], pca.reconstruct(x, 12))
    assert torch.allclose(out["ranked_mse"], ((model.reconstruct(x) - x) ** 2).flatten(1).mean(1), atol=1e-7)
    ranked, pca_err = sp.error_curves(model, pca, x)
    assert ranked.shape == pca_err.shape == (12,)
    assert ranked[-1] == pytest.approx(float(out["ranked_mse"].mean()), rel=1e-5)
    assert pca_err[4] == pytest.approx(float(((pca.reconstruct(x, 5) - x) ** 2).mean()), rel=1e-5)
    with pytest.raises(ConfigError, match="rank-ordered"):
        sp.anytime_vs_pca(small("ae"), pca, x, 3)


def test_jacobian_map_norms_and_coordinates():
    model = small("contractive-ae")
    x = torch.rand(50, *SHAPE)
    codes = model.encode(x).detach().numpy()
    labels = np.arange(50) % 3
    jm = sp.jacobian_map(model, x, codes, labels, n=20, seed=1)
    assert jm.xy.shape == (20, 2) and len(np.unique(jm.index)) == 20
    expected = jacobian_frobenius_sq(model, x[torch.as_tensor(jm.index)]).sqrt().numpy()
    np.testing.assert_allclose(jm.norm, expected, rtol=1e-5)
    assert (jm.labels == labels[jm.index]).all() and "computed" in jm.source
    stored = {"pca": np.arange(100, dtype=np.float32).reshape(50, 2)}
    from_maps = sp.jacobian_map(model, x, codes, labels, n=20, seed=1, maps=stored)
    np.testing.assert_array_equal(from_maps.xy, stored["pca"][jm.index])
    assert "maps.npz" in from_maps.source
    short = {"pca": np.zeros((10, 2), np.float32)}      # a map of other images is not used
    assert "computed" in sp.jacobian_map(model, x, codes, labels, n=5, maps=short).source
    with pytest.raises(ConfigError, match="codes"):
        sp.jacobian_map(model, x[:10], codes, labels)
