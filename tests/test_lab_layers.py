"""The Layers view (aecore/lab/layers.py), for every registered model: one image's layers in execution
order, shapes that match their tensors, the code layer marked, the last layer giving the reconstruction,
hypernetwork-generated layers flagged; feature-map grids, captions and figures."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from aecore.errors import AecoreError, ConfigError, DataError
from aecore.lab import layers as ly
from aecore.lab.vae import is_generative
from aecore.models import HYPERNETWORK, AutoEncoder, build_model, get_model_class, has_role, list_models

SHAPES = [(1, 28, 28), (3, 32, 32), (64,)]


def small(name: str) -> AutoEncoder:
    cls = get_model_class(name)
    shape = next(s for s in SHAPES if cls.supports(s))
    return cls(config=cls.small_config(shape)).eval()


@pytest.fixture(scope="module", params=list_models())
def traced(request):
    torch.manual_seed(0)
    model = small(request.param)
    x = torch.rand(*model.config.input_shape)
    return request.param, model, x, ly.trace(model, x)


def test_layers_run_in_order_with_their_shapes(traced):
    name, model, x, tr = traced
    assert tr.layers and [layer.index for layer in tr.layers] == list(range(len(tr.layers)))
    assert len(set(tr.names())) == len(tr.layers), "layer names must be unique (the picker lists them)"
    for layer in tr.layers:
        assert tuple(layer.activation.shape) == layer.shape
        assert layer.activation.dtype == torch.float32 and torch.isfinite(layer.activation).all()
        assert layer.kind and layer.name
        assert all(-1 <= i < layer.index for i in layer.inputs), "a layer reads only earlier layers or the input"
    assert tr.layers[0].inputs[0] == ly.INPUT
    assert torch.equal(tr.image, x.float())


def test_the_last_layer_gives_the_reconstruction(traced):
    name, model, x, tr = traced
    recon = model.reconstruct(x[None])[0]
    assert torch.allclose(tr.recon, recon, atol=1e-6)
    last = tr.layers[-1].activation
    assert last.numel() == recon.numel()
    assert torch.allclose(last.reshape(-1), recon.reshape(-1), atol=1e-5), f"{name}: last layer is not the output"


def test_the_code_layer_is_marked(traced):
    name, model, x, tr = traced
    code = tr.layers[tr.code]
    assert code.is_code and [layer.index for layer in tr.layers if layer.is_code] == [tr.code]
    assert all(layer.part == "encoder" for layer in tr.layers[:tr.code])
    assert all(layer.part == "decoder" for layer in tr.layers[tr.code + 1:])
    with torch.no_grad():
        z = model.encode(x[None])[0].reshape(-1)
    if code.code_ops:                                    # the code is computed from this layer (a U-Net's mean)
        assert code.numel > z.numel()
    else:
        assert torch.allclose(code.activation.reshape(-1), z, atol=1e-5), f"{name}: code layer is not the code"
    assert "code" in ly.describe(tr, tr.code, generative=is_generative(model))


def test_hypernetwork_layers_are_flagged(traced):
    name, model, x, tr = traced
    weighted = [layer for layer in tr.layers if layer.kind in ("Linear", "Conv2d", "ConvTranspose2d")]
    assert weighted
    if has_role(name, HYPERNETWORK):
        assert tr.hyper and any(layer.generated for layer in weighted)
        for layer in tr.layers:
            if layer.generated:
                assert "hypernetwork generates" in ly.describe(tr, layer.index)
    else:
        assert not tr.hyper and not any(layer.generated for layer in tr.layers)


def test_every_layer_has_a_caption_and_a_picture(traced):
    name, model, x, tr = traced
    for layer in tr.layers:
        assert len(ly.describe(tr, layer.index)) > 20
        fig = ly.activation_figure(layer, input_shape=model.config.input_shape, tile_px=40)
        assert fig.data
    fig = ly.diagram_figure(tr, selected=len(tr.layers) - 1)
    boxes = next(t for t in fig.data if t.customdata is not None and len(t.customdata) == len(tr.layers))
    assert list(boxes.customdata) == list(range(len(tr.layers)))
    assert np.all(np.diff(np.asarray(boxes.x)) > 0), "boxes run left to right in execution order"
    labels = [a.text for a in fig.layout.annotations]
    assert any("Linear" in t or "Conv" in t for t in labels)


def test_unet_skips_are_arcs_and_its_code_is_a_map():
    model = small("unet")
    tr = ly.trace(model, torch.rand(*model.config.input_shape))
    joins = [layer for layer in tr.layers if layer.kind == "Concatenate"]
    assert len(joins) == model.config.depth and all(len(layer.skips) == 1 for layer in joins)
    for join in joins:
        skip = tr.layers[join.skips[0]]
        assert skip.part == "encoder" and skip.shape[1:] == join.shape[1:]
        assert "Skip connection" in ly.describe(tr, join.index)
    code = tr.layers[tr.code]
    assert code.is_map and code.shape[0] == model.config.latent_dim and code.code_ops == ["mean"]
    fig = ly.diagram_figure(tr)
    assert sum(1 for t in fig.data if t.name == "skip connection") == len(joins)


def test_tied_and_generated_weights_are_said():
    tied = ly.trace(small("stacked-ae"), torch.rand(1, 28, 28))
    assert [layer.tied_to for layer in tied.layers if layer.tied_to] == ["encoder.2.weight", "encoder.0.weight"]
    hyper = ly.trace(small("hyper-ae"), torch.rand(1, 28, 28))
    assert [layer.name for layer in hyper.layers if layer.generated] == ["encoder.0", "encoder.1", "decoder.0",
                                                                          "decoder.1"]
    fig = ly.diagram_figure(hyper)
    assert any(t.name == "weights generated by the hypernetwork" for t in fig.data)


def test_activation_grid_shapes_and_scaling():
    maps = torch.randn(40, 7, 5)
    grid = ly.activation_grid(maps, max_channels=32, per_row=8)
    assert (grid.shown, grid.total, grid.per_row, grid.tile) == (32, 40, 8, (7, 5))
    assert grid.values.shape == grid.raw.shape == grid.channel.shape == (4 * 8 - 1, 8 * 6 - 1)
    assert grid.signed and np.nanmax(np.abs(grid.values)) == pytest.approx(1.0)
    for i, (r, c) in enumerate(grid.origins):
        assert np.allclose(grid.raw[r:r + 7, c:c + 5], maps[i].numpy())
        assert np.nanmax(np.abs(grid.values[r:r + 7, c:c + 5])) == pytest.approx(1.0)   # each map on its own
        assert (grid.channel[r:r + 7, c:c + 5] == i).all()
    assert np.isnan(grid.values[7, :]).all() and (grid.channel[7, :] == -1).all()       # the gap between rows
    small_grid = ly.activation_grid(torch.rand(3, 4, 4), per_row=8)
    assert small_grid.values.shape == (4, 3 * 5 - 1) and not small_grid.signed
    dead = ly.activation_grid(torch.zeros(2, 3, 3))
    assert np.nanmax(dead.values) == 0
    with pytest.raises(ConfigError):
        ly.activation_grid(torch.rand(10))


def test_feature_map_figure_caps_the_channels():
    layer = ly.LayerTrace(index=0, name="c", kind="Conv2d", shape=(48, 6, 6), activation=torch.randn(48, 6, 6))
    fig = ly.activation_figure(layer, tile_px=36, per_row=8)
    assert fig.data[0].z.shape == (4 * 7 - 1, 8 * 7 - 1)
    assert "32 of 48 channels" in fig.layout.title.text
    assert len(fig.layout.annotations) == 32                         # every map named by its channel


def test_dense_layers_as_bars_and_images():
    flat = ly.LayerTrace(index=0, name="d", kind="Linear", shape=(784,), activation=torch.rand(784))
    fig = ly.activation_figure(flat, input_shape=(1, 28, 28))
    assert len(fig.data) == 2 and fig.data[1].z.shape == (28, 28)      # bars, and the image
    assert "one number per pixel" in fig.layout.title.text
    square = ly.LayerTrace(index=0, name="d", kind="ReLU", shape=(64,), activation=torch.rand(64))
    assert ly.as_maps(square, (1, 28, 28)).shape == (1, 8, 8)
    odd = ly.LayerTrace(index=0, name="d", kind="Linear", shape=(10,), activation=torch.rand(10))
    assert ly.as_maps(odd, (1, 28, 28)) is None and len(ly.activation_figure(odd).data) == 1


def test_vae_posterior_and_other_models():
    vae = small("vae")
    x = torch.rand(1, 28, 28)
    post = ly.posterior(vae, x, seed=3)
    with torch.no_grad():
        mu, logvar = vae.posterior(x[None])
    assert np.allclose(post.mu, mu[0].numpy(), atol=1e-6) and np.allclose(post.sigma, (0.5 * logvar[0]).exp().numpy())
    assert np.allclose(ly.posterior(vae, x, seed=3).z, post.z) and not np.allclose(post.z, post.mu)
    assert len(ly.posterior_figure(post).data) == 2
    assert ly.posterior(small("ae"), x) is None


def test_a_wrong_image_or_a_model_without_layers_is_refused():
    model = small("ae")
    with pytest.raises(DataError, match="shape"):
        ly.trace(model, torch.rand(3, 32, 32))

    class Empty(nn.Module):
        registry_name = "nothing"
        config = model.config

        def encode(self, x):
            return x.reshape(1, -1)

        def reconstruct(self, x):
            return x

    with pytest.raises(AecoreError, match="nothing this view can show"):
        ly.trace(Empty(), torch.rand(1, 28, 28))


def test_the_shared_model_is_left_alone():
    model = build_model("conv-ae", {"input_shape": [1, 28, 28], "channels": [4, 8], "latent_dim": 4}).train()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    ly.trace(model, torch.rand(1, 28, 28))
    assert model.training
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks


def test_a_click_on_the_diagram_names_a_layer():
    assert ly.clicked_layer({"points": [{"customdata": 4, "curve_number": 3}]}) == 4
    assert ly.clicked_layer({"points": [{"customdata": [2]}]}) == 2
    assert ly.clicked_layer({"points": [{"customdata": -1}]}) is None                 # the input box
    assert ly.clicked_layer({"points": [{"customdata": float("inf")}]}) is None       # the browser's JSON: anything
    assert ly.clicked_layer({"points": []}) is None and ly.clicked_layer(None) is None
    assert ly.clicked_layer({"points": [{"x": 1}]}) is None


def test_diagram_levels_make_a_u():
    model = small("conv-ae")
    tr = ly.trace(model, torch.rand(1, 28, 28))
    xs, ys = ly.positions(tr)
    assert ys[tr.code] == min(ys) and math.isclose(ys[-1], ly._level((1, 28, 28)))
