"""Sparse and contractive autoencoders: penalties against hand computation, Jacobians against brute force."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aecore.errors import ConfigError
from aecore.models import build_model, make_config
from aecore.models.ae import MLPAutoEncoder
from aecore.models.contractive_ae import jacobian_frobenius_sq
from aecore.models.sparse_ae import (B_DEC_CLAMP, SIGMOID_OFF_THRESHOLD, decoder_norm_l1_penalty,
                                     kl_sparsity_penalty, l1_penalty)
from aecore.store import load_pretrained

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained"


def structured(n: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """n examples drawn around 4 prototypes in [0, 1]^d."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(4, d, generator=g)
    return (0.8 * protos[torch.arange(n) % 4] + 0.2 * torch.rand(n, d, generator=g)).clamp(0, 1)


def train(model, x, steps: int, lr: float = 1e-2):
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        opt.zero_grad()
        model(x).loss.backward()
        opt.step()
    return model


def brute_frobenius_sq(f, x: torch.Tensor) -> torch.Tensor:
    """||df/dx||_F^2 per example, one full Jacobian at a time."""
    values = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), xi)
        values.append(jac.pow(2).sum())
    return torch.stack(values)


# --- sparse-ae ------------------------------------------------------------------------------

def test_l1_penalty_matches_hand_computation():
    h = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.5]])
    assert l1_penalty(h).item() == pytest.approx((3.0 + 3.5) / 2)
    model = build_model("sparse-ae", input_shape=(6,), latent_dim=3, penalty="l1", weight=0.5)
    assert model.penalty(h).item() == pytest.approx(0.5 * 3.25)

    x = torch.rand(5, 6)
    out = model(x)
    code = model.encode(x)
    assert (code >= 0).all()                                           # ReLU code
    assert out.parts["l1"].item() == pytest.approx(0.5 * code.sum(1).mean().item(), rel=1e-6)
    assert out.loss.item() == pytest.approx((out.parts["recon"] + out.parts["l1"]).item(), rel=1e-6)


def test_kl_sparsity_penalty_matches_hand_computation():
    h = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)   # batch means q = (0.2, 0.3)
    p = 0.05
    expected = sum(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)) for q in (0.2, 0.3))
    assert kl_sparsity_penalty(h, p).item() == pytest.approx(expected, rel=1e-12)

    model = build_model("sparse-ae", input_shape=(6,), latent_dim=2, penalty="kl", weight=2.0, target_rate=p)
    assert model.penalty(h).item() == pytest.approx(2.0 * expected, rel=1e-12)
    out = model(torch.rand(5, 6))
    assert set(out.parts) == {"recon", "kl_sparsity"}
    assert ((out.z > 0) & (out.z < 1)).all()                           # sigmoid code


def test_kl_sparsity_penalty_is_zero_when_mean_activation_equals_target():
    p = 0.2
    h = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.2, 0.4]], dtype=torch.float64)  # column means all 0.2
    assert kl_sparsity_penalty(h, p).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_sparsity_penalty(h, 0.05).item() > 0.1


def test_strong_l1_weight_increases_population_sparsity():
    x = structured(32, 20)

    def trained(weight: float):
        torch.manual_seed(1)
        model = build_model("sparse-ae", input_shape=(20,), latent_dim=32, penalty="l1", weight=weight)
        before = model.eval_metrics(x)["population_sparsity"].mean().item()
        train(model, x, 60)
        return before, model.eval_metrics(x)["population_sparsity"].mean().item()

    before, strong = trained(0.1)
    _, free = trained(0.0)
    assert strong > before + 0.3, (before, strong)
    assert strong > free + 0.2, (free, strong)
    assert strong < 1.0                                               # sparse, not all dead


def test_population_sparsity_thresholds():
    relu = build_model("sparse-ae", input_shape=(4,), latent_dim=4, penalty="l1")
    h = torch.tensor([[0.0, 0.0, 0.001, 1.0]])
    assert relu.off_units(h).float().mean().item() == 0.5             # exactly zero counts as off
    sig = build_model("sparse-ae", input_shape=(4,), latent_dim=4, penalty="kl")
    h = torch.tensor([[SIGMOID_OFF_THRESHOLD / 2, 0.02, 0.5, 0.9]])
    assert sig.off_units(h).float().mean().item() == 0.25
    metrics = sig.eval_metrics(torch.rand(7, 4))
    assert set(metrics) == {"population_sparsity", "mean_activation"}
    assert all(v.shape == (7,) for v in metrics.values())


@pytest.mark.parametrize("bad, field", [
    ({"target_rate": 0.0}, "target_rate"),
    ({"target_rate": 1.0}, "target_rate"),
    ({"target_rate": 1.5}, "target_rate"),
    ({"weight": -0.1}, "weight"),
    ({"hidden": [0]}, "hidden"),
    ({"penalty": "kl", "l1_decoder_norm": True}, "l1_decoder_norm"),
    ({"init_decoder_norm": 0.0}, "init_decoder_norm"),
    ({"weight_warmup_steps": -1}, "weight_warmup_steps"),
])
def test_sparse_config_validation_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        build_model("sparse-ae", input_shape=(4,), **bad)


def test_sparse_default_weight_depends_on_penalty():
    l1 = build_model("sparse-ae", input_shape=(4,), penalty="l1").config
    kl = build_model("sparse-ae", input_shape=(4,), penalty="kl").config
    assert l1.weight is None and l1.effective_weight != kl.effective_weight
    assert build_model("sparse-ae", input_shape=(4,), penalty="kl", weight=0.0).config.effective_weight == 0.0


# --- sparse-ae, L1 as Conerly et al. 2024 ----------------------------------------------------

CONERLY = {"penalty": "l1", "l1_decoder_norm": True, "init_decoder_norm": 0.1, "weight_warmup_steps": 4}


def test_decoder_norm_l1_penalty_matches_hand_computation():
    h = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.5]])
    w_dec = torch.tensor([[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]])             # (D = 2, K = 3): column norms 5, 2, 1
    expected = ((1.0 * 2 + 2.0 * 1) + (3.0 * 5 + 0.5 * 1)) / 2            # sum_j |h_j| ||W_dec[:, j]||, batch mean
    assert decoder_norm_l1_penalty(h, w_dec).item() == pytest.approx(expected)

    model = build_model("sparse-ae", input_shape=(2,), latent_dim=3, penalty="l1", weight=0.5, l1_decoder_norm=True)
    with torch.no_grad():
        model.decoder[0].weight.copy_(w_dec)
    assert model.penalty(h).item() == pytest.approx(0.5 * expected)
    x = torch.rand(5, 2)
    out = model(x)
    norms = w_dec.norm(dim=0)
    assert out.parts["l1"].item() == pytest.approx(0.5 * (model.encode(x) * norms).sum(1).mean().item(), rel=1e-6)


def test_decoder_norm_penalty_cannot_be_gamed_by_rescaling_code_and_atoms():
    """Shrinking the code by c and growing the atoms by c leaves the reconstruction alone: the plain
    L1 penalty then falls by c, the decoder-norm one stays (the reason for it)."""
    torch.manual_seed(0)
    x = torch.rand(8, 6)
    for decoder_norm in (False, True):
        model = build_model("sparse-ae", input_shape=(6,), latent_dim=4, weight=0.3, l1_decoder_norm=decoder_norm)
        before = model(x)
        with torch.no_grad():
            model.encoder[0].weight.div_(10)
            model.encoder[0].bias.div_(10)
            model.decoder[0].weight.mul_(10)
        after = model(x)
        torch.testing.assert_close(after.parts["recon"], before.parts["recon"], rtol=1e-4, atol=0)
        expected = before.parts["l1"] if decoder_norm else before.parts["l1"] / 10
        torch.testing.assert_close(after.parts["l1"], expected, rtol=1e-4, atol=0)


def test_conerly_initialisation():
    model = build_model("sparse-ae", input_shape=(1, 4, 5), latent_dim=7, **CONERLY)
    w_dec, enc = model.decoder[0].weight, model.encoder[0]                 # (20, 7), Linear(20 -> 7)
    torch.testing.assert_close(w_dec.norm(dim=0), torch.full((7,), 0.1))
    assert torch.equal(enc.weight, w_dec.t()) and not enc.bias.any()
    assert not torch.equal(w_dec[:, 0], w_dec[:, 1])                     # random directions

    x = torch.rand(6, 1, 4, 5)
    x[:, :, 0, 0] = 0.0                                                  # a pixel that is always 0
    model(x).loss.backward()                                             # the first training batch sets b_dec
    mean = x.reshape(6, -1).mean(0).clamp(B_DEC_CLAMP, 1 - B_DEC_CLAMP)
    torch.testing.assert_close(model.decoder[0].bias.detach(), torch.log(mean / (1 - mean)))
    with torch.no_grad():
        torch.testing.assert_close(model.decode(torch.zeros(1, 7)).reshape(-1), mean)   # a silent code outputs the mean
    model(torch.rand(6, 1, 4, 5))                                        # later batches leave it to the optimiser
    torch.testing.assert_close(model.decoder[0].bias.detach(), torch.log(mean / (1 - mean)))
    assert not model.loss_is_example_mean()                              # DDP: each shard would give another b_dec


def test_conerly_b_dec_is_not_set_again_after_a_resume():
    model = build_model("sparse-ae", input_shape=(5,), latent_dim=3, **CONERLY)
    model(torch.rand(4, 5))
    resumed = build_model("sparse-ae", input_shape=(5,), latent_dim=3, **CONERLY)
    resumed.load_state_dict(model.state_dict())
    assert int(resumed.steps) == 1
    before = resumed.decoder[0].bias.detach().clone()
    resumed(torch.zeros(4, 5))                                           # would be logit(1e-3) everywhere
    assert torch.equal(resumed.decoder[0].bias.detach(), before)


def test_weight_warms_up_linearly_over_training_steps_only():
    model = build_model("sparse-ae", input_shape=(5,), latent_dim=3, penalty="l1", weight=0.8,
                        weight_warmup_steps=4)
    h = torch.tensor([[1.0, 2.0, 0.0]])
    seen = []
    for _ in range(6):
        seen.append(model.penalty(h).item())
        model(torch.rand(3, 5))                                          # one training batch
    assert seen == pytest.approx([0.8 * 3 * s for s in (0, 0.25, 0.5, 0.75, 1.0, 1.0)])
    assert int(model.steps) == 6
    model.eval()
    model(torch.rand(3, 5))                                              # validation: the clock stands
    model.train()
    with torch.no_grad():
        model(torch.rand(3, 5))                                          # no gradient: no training step
    assert int(model.steps) == 6
    assert "steps" in model.state_dict()                                 # saved: a resumed run goes on
    assert not model.loss_is_example_mean()                              # a buffer forward changes: one process


def test_sparse_configs_without_the_new_fields_keep_the_plain_l1_penalty():
    """config.json files written before l1_decoder_norm etc. (old field names too) mean the plain L1
    penalty, the framework's default init and no warm-up: same penalty, same state_dict keys."""
    old = {"input_shape": [6], "latent_dim": 3, "hidden": [], "penalty": "l1", "weight": 0.5, "act": "relu",
           "recon_loss": "bce", "target_rate": 0.05}
    config = make_config("sparse-ae", old)
    assert (config.l1_decoder_norm, config.init_decoder_norm, config.weight_warmup_steps) == (False, None, 0)
    model = build_model("sparse-ae", old)
    assert set(model.state_dict()) == {"encoder.0.weight", "encoder.0.bias", "decoder.0.weight", "decoder.0.bias"}
    assert model.loss_is_example_mean()
    h = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.5]])
    assert model.penalty(h).item() == pytest.approx(0.5 * l1_penalty(h).item())
    torch.manual_seed(3)
    fresh = build_model("sparse-ae", old)
    torch.manual_seed(3)
    plain = build_model("sparse-ae", {k: v for k, v in old.items() if k not in ("act", "recon_loss")})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), plain.state_dict().values()))


SHIPPED_L1 = sorted(f"{p.parent.name}/{p.name}" for p in SHIPPED.glob("*/sparse-ae-l1"))


@pytest.mark.parametrize("model_id", SHIPPED_L1)
def test_shipped_l1_models_are_sparse_without_dead_units(model_id):
    """Issue 16: at least 85 % of the code exactly 0 on the test split, at most 5 % of the units never on."""
    from aecore.data import load_dataset

    loaded = load_pretrained(model_id, root=SHIPPED, device="cpu")
    assert loaded.model.config.l1_decoder_norm and loaded.metrics["population_sparsity"] >= 0.85
    test = load_dataset(model_id.split("/")[0], "test")
    with torch.no_grad():
        h = loaded.model.eval().encode(test.as_float().view(-1, *loaded.model.config.input_shape))
    assert float((h == 0).float().mean()) == pytest.approx(loaded.metrics["population_sparsity"], abs=1e-5)
    assert int(((h > 0).sum(0) == 0).sum()) <= 0.05 * h.shape[1]


# --- contractive-ae -------------------------------------------------------------------------

def test_contractive_closed_form_equals_torch_func_and_brute_force():
    model = build_model("contractive-ae", input_shape=(2, 3, 3), latent_dim=7).double()
    assert model.uses_closed_form
    x = torch.rand(5, 2, 3, 3, dtype=torch.float64)
    closed = jacobian_frobenius_sq(model, x, method="closed_form")
    func = jacobian_frobenius_sq(model, x, method="autograd")
    brute = brute_frobenius_sq(model.encode, x)
    torch.testing.assert_close(closed, brute, rtol=1e-5, atol=0)
    torch.testing.assert_close(func, brute, rtol=1e-5, atol=0)
    torch.testing.assert_close(model.jacobian_sq(x.flatten(1)), brute, rtol=1e-5, atol=0)
    torch.testing.assert_close(model.eval_metrics(x)["jacobian_norm"], brute.sqrt(), rtol=1e-5, atol=0)


def test_contractive_torch_func_equals_brute_force_on_two_layer_encoder():
    model = build_model("contractive-ae", input_shape=(10,), latent_dim=4, hidden=[6],
                        activation="tanh").double()
    assert not model.uses_closed_form
    x = torch.rand(5, 10, dtype=torch.float64)
    brute = brute_frobenius_sq(model.encode, x)
    torch.testing.assert_close(jacobian_frobenius_sq(model, x), brute, rtol=1e-5, atol=0)
    torch.testing.assert_close(model.jacobian_sq(x), brute, rtol=1e-5, atol=0)
    with pytest.raises(ConfigError, match="closed_form"):
        jacobian_frobenius_sq(model, x, method="closed_form")


def test_jacobian_norm_of_any_autoencoder_via_encode():
    model = build_model("sparse-ae", input_shape=(8,), latent_dim=5, hidden=[6], penalty="kl").double()
    x = torch.rand(4, 8, dtype=torch.float64)
    torch.testing.assert_close(jacobian_frobenius_sq(model, x), brute_frobenius_sq(model.encode, x),
                               rtol=1e-5, atol=0)
    assert not jacobian_frobenius_sq(model, x).requires_grad      # detached unless create_graph


@pytest.mark.parametrize("hidden", [[], [6]])
def test_contractive_penalty_gradients_reach_the_encoder(hidden):
    model = build_model("contractive-ae", input_shape=(10,), latent_dim=4, hidden=hidden, weight=1.0)
    out = model(torch.rand(6, 10))
    assert set(out.parts) == {"recon", "contractive"} and out.parts["contractive"] > 0
    out.parts["contractive"].backward()                           # the penalty alone
    for param in model.encoder.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())


def test_contractive_penalty_shrinks_the_jacobian():
    x = structured(32, 16)

    def jac_norm(weight: float) -> float:
        torch.manual_seed(2)
        model = train(build_model("contractive-ae", input_shape=(16,), latent_dim=8, weight=weight), x, 40)
        return model.eval_metrics(x)["jacobian_norm"].mean().item()

    assert jac_norm(20.0) < 0.5 * jac_norm(0.0)


@pytest.mark.parametrize("bad, field", [
    ({"weight": -1.0}, "weight"),
    ({"jacobian": "closed_form", "hidden": [5]}, "jacobian"),
    ({"jacobian": "numeric"}, "jacobian"),
])
def test_contractive_config_validation_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        build_model("contractive-ae", input_shape=(4,), **bad)


# --- built on the MLP autoencoder -----------------------------------------------------------

@pytest.mark.parametrize("name", ["sparse-ae", "contractive-ae"])
def test_regularized_models_are_mlp_autoencoders_with_the_shipped_layout(name):
    """Same layers and state_dict keys as before they shared MLPAutoEncoder: saved models still load."""
    model = build_model(name, input_shape=(10,), latent_dim=4, hidden=[6])
    assert isinstance(model, MLPAutoEncoder)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "encoder.0.weight": (6, 10), "encoder.0.bias": (6,), "encoder.2.weight": (4, 6), "encoder.2.bias": (4,),
        "decoder.0.weight": (6, 4), "decoder.0.bias": (6,), "decoder.2.weight": (10, 6), "decoder.2.bias": (10,)}
    code = {"sparse-ae": torch.nn.ReLU, "contractive-ae": torch.nn.Sigmoid}[name]
    assert isinstance(model.encoder[-1], code) and isinstance(model.decoder[-1], torch.nn.Linear)


@pytest.mark.parametrize("name", ["sparse-ae", "contractive-ae"])
@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_regularized_reconstruction_loss_is_the_autoencoders(name, loss):
    model = build_model(name, input_shape=(6,), latent_dim=3, loss=loss)
    x = torch.rand(5, 6)
    out = model(x)
    per_example = (F.binary_cross_entropy(out.recon, x, reduction="none") if loss == "bce"
                   else (out.recon - x) ** 2).sum(1)
    torch.testing.assert_close(out.parts["recon"], per_example.mean(), rtol=1e-5, atol=0)
    assert len(out.parts) == 2 and torch.isclose(out.loss, sum(out.parts.values()))


@pytest.mark.parametrize("name", ["sparse-ae", "contractive-ae"])
def test_old_field_names_load_into_the_new_ones(name):
    config = make_config(name, {"input_shape": [4], "act": "tanh", "recon_loss": "mse"})
    assert (config.activation, config.loss) == ("tanh", "mse")
    assert {"activation", "loss"} <= set(config.to_dict()) and not {"act", "recon_loss"} & set(config.to_dict())
    with pytest.raises(ConfigError, match="sets both 'act' and 'activation'.*keep only 'activation'"):
        make_config(name, {"act": "tanh", "activation": "relu"})
    with pytest.raises(ConfigError, match="sets both 'recon_loss' and 'loss'"):
        make_config(name, {"recon_loss": "mse", "loss": "mse"})       # even when they agree
    with pytest.raises(ConfigError, match=r"config\.act: 'swish' is not one of"):   # the key the file has
        make_config(name, {"act": "swish"})


# both sparse AEs were rebuilt after the rename (issue 16); the contractive AE still ships the old files
@pytest.mark.parametrize("model_id", sorted(f"{p.parent.name}/{p.name}" for p in SHIPPED.glob("*/contractive-ae")))
def test_shipped_models_written_with_old_field_names_still_load(model_id):
    written = json.loads((SHIPPED / model_id / "config.json").read_text())["config"]
    assert {"act", "recon_loss"} <= set(written)                      # files from before the rename, unedited
    model = load_pretrained(model_id, root=SHIPPED, device="cpu").model   # manifest hashes and strict keys
    assert (model.config.activation, model.config.loss) == (written["act"], written["recon_loss"])
