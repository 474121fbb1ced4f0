"""Every registered model, every input shape it supports: build, shapes, training, save/load, config.

A model added later is covered here without touching this file.
"""

import pytest
import torch

from aecore.models import build_model, get_model_class, list_models, make_config
from aecore.store import load_model, save_model

SHAPES = [(1, 28, 28), (3, 32, 32), (64,)]
CASES = [(name, shape) for name in list_models() for shape in SHAPES if get_model_class(name).supports(shape)]


def structured_batch(shape, n=32, seed=0):
    """Four smooth prototypes + small noise: learnable in a few steps by any autoencoder."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(4, *shape, generator=g)
    labels = torch.arange(n) % 4
    x = (protos[labels] + 0.05 * torch.randn(n, *shape, generator=g)).clamp(0, 1)
    y = labels.clone()
    y[::2] = -1  # half unlabelled: semi-supervised models see both kinds
    return x, y


def small(name, shape):
    return get_model_class(name)(config=get_model_class(name).small_config(shape))


def test_registry_is_populated():
    expected = {"ae", "conv-ae", "linear-ae", "stacked-ae", "sparse-ae", "contractive-ae", "vae", "conv-vae",
                "hyper-ae", "hyper-semi", "rank-ordered-ae", "unet"}
    assert expected <= set(list_models())


def test_every_model_supports_some_shape():
    for name in list_models():
        assert any(get_model_class(name).supports(s) for s in SHAPES), name


@pytest.mark.parametrize("name, shape", CASES)
def test_forward_shapes(name, shape):
    model = small(name, shape)
    x, y = structured_batch(shape, n=5)
    out = model(x, target=x, y=y)
    assert out.recon.shape == x.shape
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert "recon" in out.parts and all(v.ndim == 0 for v in out.parts.values())
    assert out.z.shape[0] == 5
    assert model.encode(x).shape[0] == 5
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("name, shape", CASES)
def test_loss_falls(name, shape):
    torch.manual_seed(0)
    model = small(name, shape)
    x, y = structured_batch(shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for stage in model.stages():
        model.begin_stage(stage)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(40 if len(model.stages()) == 1 else 15):
            out = model(x, target=x, y=y)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(out.loss.item())
        model.end_stage(stage)
    head, tail = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # 2 %: Bernoulli/BCE losses sit on a large floor (the data's entropy), so relative drops are small.
    assert tail < 0.98 * head, f"{name} {shape}: loss {head:.4g} -> {tail:.4g}"


@pytest.mark.parametrize("name, shape", CASES)
def test_save_load_gives_identical_outputs(name, shape, tmp_path):
    torch.manual_seed(1)
    model = small(name, shape).eval()
    x, _ = structured_batch(shape, n=4)
    loaded = load_model(save_model(model, tmp_path / "m"), device="cpu").model
    assert type(loaded) is type(model)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    assert torch.equal(model.encode(x), loaded.encode(x))


@pytest.mark.parametrize("name, shape", CASES)
def test_config_round_trip(name, shape):
    config = get_model_class(name).small_config(shape)
    again = make_config(name, config.to_dict())
    assert again == config
    assert build_model(name, config.to_dict()).config == config


@pytest.mark.parametrize("name", list_models())
def test_default_config_is_valid(name):
    config = make_config(name, {"input_shape": [1, 28, 28]} if get_model_class(name).supports((1, 28, 28)) else {})
    assert config.to_dict()["input_shape"]
