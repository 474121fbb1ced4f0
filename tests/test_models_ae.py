"""Plain, conv, linear and stacked autoencoders: configs, shapes, PCA identity, tied weights, greedy stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import subspace_angles as scipy_angles

from aecore.config import StrictConfig
from aecore.errors import ConfigError
from aecore.models import build_model, get_model_class
from aecore.models.ae import AEConfig
from aecore.models.layers import mirrored_mlps
from aecore.models.linear_ae import pca_subspace_angles, principal_angles_to_pca, subspace_angles


def train(model, x, steps, lr=1e-2, opt=None, target=None):
    opt = opt or torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        out = model(x, target=target)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def structured(n, shape):
    """Images that lie near a low-dimensional set, so reconstruction can actually improve."""
    d = int(np.prod(shape))
    codes = torch.rand(n, 3)
    basis = torch.rand(3, d)
    return (codes @ basis / 3).clamp(0, 1).reshape(n, *shape)


# --- ae ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("latent", [4, 96])  # under- and overcomplete for D = 64
def test_ae_under_and_overcomplete(latent):
    model = build_model("ae", input_shape=[64], hidden=[32], latent_dim=latent)
    x = torch.rand(5, 64)
    out = model(x)
    assert out.z.shape == (5, latent) and out.recon.shape == x.shape
    assert model.encoder[0].weight.shape == (32, 64)  # the app's filter view
    assert torch.all((out.recon > 0) & (out.recon < 1))
    assert set(out.parts) == {"recon"} and torch.isclose(out.loss, out.parts["recon"])
    manual = ((out.recon - x) ** 2).sum(dim=1).mean()
    assert torch.isclose(out.loss, manual, rtol=1e-5)


def test_ae_image_input_and_code_activation():
    model = build_model("ae", input_shape=[1, 8, 8], hidden=[], latent_dim=6, code_activation="sigmoid")
    x = torch.rand(3, 1, 8, 8)
    z = model.encode(x)
    assert z.shape == (3, 6) and torch.all((z > 0) & (z < 1))
    assert model.decode(z).shape == x.shape
    assert model.encoder[0].weight.shape == (6, 64)


def test_ae_bce_needs_sigmoid_output():
    with pytest.raises(ConfigError, match="loss = 'bce' needs output = 'sigmoid'"):
        build_model("ae", input_shape=[64], loss="bce", output="linear")
    with pytest.raises(ConfigError, match="loss"):
        AEConfig.from_dict({"input_shape": [64], "loss": "bce", "output": "linear"})
    with pytest.raises(ConfigError, match="hidden"):
        build_model("ae", input_shape=[64], hidden=[0])
    build_model("ae", input_shape=[64], loss="mse", output="linear")  # fine


def test_ae_layers_come_from_the_shared_builder():
    model = build_model("ae", input_shape=[64], hidden=[32], latent_dim=4, activation="tanh", code_activation="relu")
    encoder, decoder = mirrored_mlps(input_dim=64, hidden=[32], latent_dim=4, activation="tanh",
                                     code_activation="relu")
    assert repr(model.encoder) == repr(encoder) and repr(model.decoder) == repr(decoder)
    assert list(model.state_dict()) == [f"{part}.{i}.{p}" for part in ("encoder", "decoder") for i in (0, 2)
                                        for p in ("weight", "bias")]
    vae_encoder, _ = mirrored_mlps(input_dim=64, hidden=[32], latent_dim=4, activation="relu", encoder_outputs=8)
    assert vae_encoder[-1].out_features == 8                           # mu and log sigma^2


@dataclass
class Renamed(StrictConfig):
    renamed: ClassVar[dict[str, str]] = {"colour": "color"}
    color: str = "red"
    size: int = 1


def test_renamed_fields_load_under_their_old_names():
    data = {"colour": "blue"}
    assert Renamed.from_dict(data).color == "blue" and data == {"colour": "blue"}   # the caller's dict untouched
    assert Renamed.from_dict({"color": "green"}).color == "green"
    assert Renamed().to_dict() == {"color": "red", "size": 1}                       # written under the new name
    with pytest.raises(ConfigError, match="Renamed: sets both 'colour' and 'color'; 'colour' is the old name"):
        Renamed.from_dict({"colour": "blue", "color": "green"})
    with pytest.raises(ConfigError, match=r"Renamed\.colour: expected a string"):
        Renamed.from_dict({"colour": 3})


def test_model_configs_share_the_renames_where_the_new_field_exists():
    config = AEConfig.from_dict({"input_shape": [64], "act": "tanh", "recon_loss": "bce"})
    assert (config.activation, config.loss) == ("tanh", "bce")
    with pytest.raises(ConfigError, match="unknown field.*act"):                    # linear-ae has no activation
        build_model("linear-ae", input_shape=[64], act="relu")


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_ae_loss_falls(loss):
    x = structured(32, (64,))
    model = build_model("ae", input_shape=[64], hidden=[32], latent_dim=4, loss=loss)
    losses = train(model, x, 60)
    assert losses[-1] < 0.8 * losses[0]
    if loss == "bce":  # BCE computed from logits must equal BCE of the sigmoid output
        out = model(x)
        manual = F.binary_cross_entropy(out.recon, x, reduction="sum") / len(x)
        assert torch.isclose(out.loss, manual, rtol=1e-4)


# --- conv-ae ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_ae_shapes(shape):
    cls = get_model_class("conv-ae")
    model = cls(config=cls.small_config(shape))
    x = torch.rand(2, *shape)
    out = model(x)
    assert out.recon.shape == x.shape and out.z.shape == (2, 8)
    assert torch.all((out.recon >= 0) & (out.recon <= 1))
    assert model.decode(model.encode(x)).shape == x.shape


def test_conv_ae_refuses_flat_and_tiny_inputs():
    cls = get_model_class("conv-ae")
    assert not cls.supports((64,)) and not cls.supports((1, 4, 4)) and cls.supports((1, 8, 8))
    with pytest.raises(ConfigError, match="conv-ae"):
        build_model("conv-ae", input_shape=[64])
    with pytest.raises(ConfigError):
        build_model("conv-ae", input_shape=[1, 4, 4])
    with pytest.raises(ConfigError, match="loss = 'bce'"):
        build_model("conv-ae", loss="bce", output="linear")


def test_conv_ae_loss_falls():
    x = structured(16, (1, 12, 12))
    model = build_model("conv-ae", input_shape=[1, 12, 12], channels=[4, 8], latent_dim=4)
    losses = train(model, x, 40)
    assert losses[-1] < 0.8 * losses[0]


# --- linear-ae vs PCA -------------------------------------------------------------------------
def test_subspace_angles_match_scipy():
    a, b = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    ours = subspace_angles(a, b).numpy()
    theirs = np.sort(np.degrees(scipy_angles(a.numpy(), b.numpy())))
    assert np.allclose(ours, theirs, atol=1e-8)
    mixed = a @ torch.randn(3, 3, dtype=torch.float64)  # same span, different basis
    assert subspace_angles(a, mixed).max() < 1e-5


def test_linear_ae_learns_pca_subspace():
    """Baldi & Hornik (1989): the optimal linear AE's decoder spans the top-d principal subspace."""
    torch.manual_seed(0)
    n, dim, d = 500, 24, 3
    basis = torch.linalg.qr(torch.randn(dim, dim))[0]
    scales = torch.tensor([3.0, 2.0, 1.5] + [0.1] * (dim - d))  # clear gap after the 3rd component
    x = (torch.randn(n, dim) * scales) @ basis.T + 0.5            # not centred: the biases must absorb it
    model = build_model("linear-ae", input_shape=[dim], latent_dim=d)
    assert model.decoder.bias is not None and model.encoder.bias is not None
    assert principal_angles_to_pca(model, x).max() > 5  # untrained: far from PCA (the check can fail)
    opt = torch.optim.Adam(model.parameters(), 2e-2)
    train(model, x, 600, opt=opt)  # 300 steps left the loss 2.3 % above PCA's on one CPU (tolerance 2 %)
    for group in opt.param_groups:  # then settle at a lower rate: 0.2 % above
        group["lr"] = 2e-3
    train(model, x, 200, opt=opt)
    angles = principal_angles_to_pca(model, x)
    assert angles.shape == (d,) and angles.max() < 5, angles
    assert torch.allclose(angles, pca_subspace_angles(model.decoder.weight, x, d))
    # and the loss reached PCA's: the energy outside the top-d subspace
    xc = x - x.mean(0)
    pca_loss = (torch.linalg.svdvals(xc)[d:] ** 2).sum() / n
    assert model(x).loss.item() < 1.02 * pca_loss.item()


# --- stacked-ae -------------------------------------------------------------------------------
def small_stacked(**kw):
    return build_model("stacked-ae", input_shape=[1, 6, 6], hidden=[12], latent_dim=5, **kw)


def test_stacked_weights_are_tied():
    model = small_stacked()
    names = dict(model.named_parameters())
    assert all(n.startswith("encoder.") or n.startswith("decoder_biases.") for n in names), list(names)
    assert not any(n.startswith("decoder_biases.") and p.dim() != 1 for n, p in names.items())
    expected = (36 * 12 + 12) + (12 * 5 + 5) + 36 + 12  # W1, b1, W2, b2, c1, c2: no decoder weights
    assert model.num_parameters() == expected
    x = torch.rand(4, 1, 6, 6)
    train(model, x, 3)
    w1, b1 = model.encoder[0].weight, model.encoder[0].bias
    w2, b2 = model.encoder[2].weight, model.encoder[2].bias
    c1, c2 = model.decoder_biases
    flat = x.reshape(4, -1)
    z = torch.sigmoid(torch.sigmoid(flat @ w1.T + b1) @ w2.T + b2)
    manual = torch.sigmoid(torch.sigmoid(z @ w2 + c2) @ w1 + c1).reshape_as(x)
    assert torch.allclose(model.encode(x), z, atol=1e-6)
    assert torch.allclose(model.reconstruct(x), manual, atol=1e-6)


def test_stacked_config_checks():
    with pytest.raises(ConfigError, match="activation = 'sigmoid'"):
        small_stacked(activation="relu", loss="bce")
    assert small_stacked().stages() == ["layer1", "layer2", "finetune"]
    assert small_stacked(finetune=False).stages() == ["layer1", "layer2"]
    with pytest.raises(ConfigError, match="unknown stage"):
        small_stacked().begin_stage("layer9")


def test_stacked_stage_loss_is_the_one_layer_tied_ae():
    model = small_stacked()
    clean = structured(8, (1, 6, 6))
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    w1, b1, c1 = model.encoder[0].weight, model.encoder[0].bias, model.decoder_biases[0]
    w2, b2, c2 = model.encoder[2].weight, model.encoder[2].bias, model.decoder_biases[1]
    xn, xc = noisy.reshape(8, -1), clean.reshape(8, -1)

    model.begin_stage("layer1")  # corrupted input, clean image target
    out = model(noisy, target=clean)
    h = torch.sigmoid(xn @ w1.T + b1)
    assert torch.isclose(out.loss, ((torch.sigmoid(h @ w1 + c1) - xc) ** 2).sum(1).mean(), rtol=1e-5)
    assert out.recon.shape == clean.shape and out.z.shape == (8, 5)
    assert torch.allclose(out.recon, model.reconstruct(noisy), atol=1e-6)  # full-stack image for display
    model.end_stage("layer1")

    model.begin_stage("layer2")  # input: layer-1 codes of the corrupted image; target: of the clean one
    out = model(noisy, target=clean)
    h_in, goal = torch.sigmoid(xn @ w1.T + b1), torch.sigmoid(xc @ w1.T + b1)
    g = torch.sigmoid(torch.sigmoid(h_in @ w2.T + b2) @ w2 + c2)
    assert torch.isclose(out.loss, ((g - goal) ** 2).sum(1).mean(), rtol=1e-5)
    assert int(out.extras["stage_layer"]) == 2


def test_stacked_greedy_stages_freeze_lower_layers_and_record_filters():
    model = small_stacked()
    x = structured(32, (1, 6, 6))
    opt = torch.optim.Adam(model.parameters(), 2e-2)  # one optimizer across stages, as a trainer would
    snapshots = {}
    for stage in model.stages():
        model.begin_stage(stage)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        losses = train(model, x, 40, opt=opt)
        assert losses[-1] < losses[0], (stage, losses[0], losses[-1])
        if stage == "layer2":
            out = model(x)
            opt.zero_grad()
            out.loss.backward()
            trained = {n for n, p in model.named_parameters() if p.grad is not None}
            assert trained == {"encoder.2.weight", "encoder.2.bias", "decoder_biases.1"}
            assert model.num_parameters() == 12 * 5 + 5 + 12
            for n, p in model.named_parameters():
                changed = not torch.equal(p, before[n])
                assert changed == (n in trained), n
        model.end_stage(stage)
        assert model.current_stage is None and all(p.requires_grad for p in model.parameters())
        snapshots[stage] = model.encoder[0].weight.detach().clone()

    assert int(model.stages_done) == 3 and model.stage_filters.shape == (3, 12, 36)
    for i, stage in enumerate(model.stages()):
        assert torch.equal(model.stage_filters[i], snapshots[stage])
    assert torch.equal(model.stage_filters[0], model.stage_filters[1])      # W1 frozen in layer2
    assert not torch.equal(model.stage_filters[1], model.stage_filters[2])  # and trained in finetune

    loaded = small_stacked()
    loaded.load_state_dict(model.state_dict())
    assert torch.equal(loaded.stage_filters, model.stage_filters) and int(loaded.stages_done) == 3
    assert [name for name, _ in loaded.filter_history()] == ["layer1", "layer2", "finetune"]
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))


def test_stacked_without_stages_trains_end_to_end():
    model = small_stacked()
    x = structured(32, (1, 6, 6))
    losses = train(model, x, 40)
    assert losses[-1] < 0.8 * losses[0]
    assert int(model.stages_done) == 0 and model.filter_history() == []


def test_stacked_ae_snapshots_keep_the_first_units_filters():
    from aecore.models.stacked_ae import SNAPSHOT_UNITS

    model = build_model("stacked-ae", {"input_shape": [1, 6, 6], "hidden": [SNAPSHOT_UNITS + 36], "latent_dim": 4})
    model.begin_stage("layer1")
    model.end_stage("layer1")
    assert model.stage_filters.shape == (3, SNAPSHOT_UNITS, 36)   # layer1, layer2, finetune
    assert torch.equal(model.filter_history()[0][1], model.encoder[0].weight[:SNAPSHOT_UNITS])
