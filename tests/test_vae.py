"""VAE and conv-VAE: KL and likelihood maths, NLL vs ELBO, sampling / interpolation / traversal views."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from aecore.errors import ConfigError
from aecore.models import build_model, make_config
from aecore.models.layers import mirrored_mlps
from aecore.models.vae import VAEBase
from aecore.store import load_pretrained

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained"


def binary_data(n: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """Binary vectors: noisy copies of 3 random binary prototypes."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=g) < 0.4).float()
    flips = (torch.rand(n, d, generator=g) < 0.05).float()
    return (protos[torch.arange(n) % 3] + flips) % 2


def tiny_vae(**kw):
    kw = {"input_shape": (16,), "latent_dim": 3, "hidden": [24], **kw}
    return build_model("vae", **kw)


def test_closed_form_kl_matches_monte_carlo():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.3, 0.5]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, 0.0], [-1.0, 0.5], [1.2, -2.0]], dtype=torch.float64)
    closed = VAEBase.kl_divergence(mu, logvar)
    assert closed[0].item() == pytest.approx(0.0, abs=1e-12)            # q == prior

    g = torch.Generator().manual_seed(0)
    n = 200_000
    q, prior = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = mu + (0.5 * logvar).exp() * torch.randn(n, *mu.shape, generator=g, dtype=mu.dtype)
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).sum(-1)              # (n, 3)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    # The MC mean is within 5 standard errors of the truth except with probability ~6e-7 (CLT);
    # the extra 1e-9 covers row 0, where every sample's log ratio is exactly 0.
    assert ((mc - closed).abs() <= 5 * se + 1e-9).all(), (mc, closed, se)


def test_bernoulli_and_gaussian_likelihoods_match_torch_distributions():
    x = binary_data(4, 16)
    raw = torch.randn(4, 16)
    bern = tiny_vae()
    torch.testing.assert_close(bern.log_px_given_z(raw, x), Bernoulli(logits=raw).log_prob(x).sum(1))

    gauss = tiny_vae(decoder="gaussian", decoder_sigma=0.3)
    xc = torch.rand(4, 16)
    expected = Normal(torch.sigmoid(raw), 0.3).log_prob(xc).sum(1)
    torch.testing.assert_close(gauss.log_px_given_z(raw, xc), expected)


def test_learned_decoder_variance_is_a_trained_parameter():
    model = tiny_vae(decoder="gaussian", decoder_var="learned", decoder_sigma=0.5)
    assert "decoder_logvar" in model.state_dict()
    before = model.decoder_logvar.detach().clone()
    x = torch.rand(16, 16)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(x).loss.backward()
        opt.step()
    assert not torch.equal(before, model.decoder_logvar.detach())
    assert "decoder_logvar" not in tiny_vae(decoder="gaussian").state_dict()


def test_elbo_and_nll_are_exact_when_q_is_the_prior_and_the_decoder_ignores_z():
    """Then every importance weight equals p(x): NLL = -ELBO = -log p(x) for any k and chunking."""
    model = tiny_vae(hidden=[])
    with torch.no_grad():
        model.encoder[0].weight.zero_()
        model.encoder[0].bias.zero_()                   # mu = 0, log sigma^2 = 0: q = N(0, I)
        model.decoder[0].weight.zero_()                 # logits = bias, whatever z is
        model.decoder[0].bias.copy_(torch.linspace(-2, 2, 16))
    x = binary_data(5, 16)
    exact = Bernoulli(logits=model.decoder[0].bias).log_prob(x).sum(1)
    torch.testing.assert_close(model.elbo(x, k=3), exact)
    torch.testing.assert_close(model.nll(x, k=10, batch_size=3), -exact)   # 1 sample per pass
    torch.testing.assert_close(model.nll(x, k=10, batch_size=100), -exact)


def _train(model, x, steps: int):
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(x).loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("steps", [0, 150])
def test_importance_sampled_nll_is_below_negative_elbo(steps):
    x = binary_data(24, 16)
    model = _train(tiny_vae(), x, steps)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        neg_elbo = -model.elbo(x[:6], k=400, generator=g)   # low-noise ELBO estimate
        nll = model.nll(x[:6], k=200, batch_size=256, generator=g)
        nll_1 = model.nll(x[:6], k=1, generator=g)
    assert nll.shape == (6,) and torch.isfinite(nll).all()
    assert nll.mean() < neg_elbo.mean()
    assert (nll <= neg_elbo + 0.5).all()                     # per example too, up to MC noise
    assert nll_1.shape == (6,)


def test_training_improves_the_elbo():
    x = binary_data(24, 16)
    model = tiny_vae()
    g = torch.Generator().manual_seed(3)
    before = model.elbo(x, k=50, generator=g).mean().item()
    _train(model, x, 100)
    after = model.elbo(x, k=50, generator=g).mean().item()
    assert after > before + 1.0, (before, after)
    metrics = model.eval_metrics(x)
    assert set(metrics) == {"elbo", "kl"} and metrics["elbo"].shape == (24,)


def test_forward_outputs_and_beta_composition():
    x = torch.rand(5, 16)
    for beta in (0.0, 1.0, 4.0):
        torch.manual_seed(0)
        model = tiny_vae(beta=beta)
        out = model(x)
        assert set(out.parts) == {"recon", "kl"}
        assert out.loss.item() == pytest.approx((out.parts["recon"] + beta * out.parts["kl"]).item(), rel=1e-6)
        assert out.parts["kl"] > 0
        mu, logvar = model.posterior(x)
        torch.testing.assert_close(out.z, mu)                            # the map code is mu
        torch.testing.assert_close(out.extras["logvar"], logvar)
        assert out.extras["z_sample"].shape == (5, 3) and not torch.equal(out.extras["z_sample"], mu)
        torch.testing.assert_close(model.encode(x), mu)
        assert ((out.recon >= 0) & (out.recon <= 1)).all()


def test_sample_interpolate_traverse():
    model = build_model("vae", input_shape=(1, 6, 6), latent_dim=4, hidden=[16])
    xa, xb = torch.rand(1, 6, 6), torch.rand(1, 1, 6, 6)                  # both single-example forms

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    samples = model.sample(7, generator=g1)
    assert samples.shape == (7, 1, 6, 6)
    torch.testing.assert_close(samples, model.sample(7, generator=g2))    # reproducible

    ends = model.decode(torch.cat([model.encode(xa[None]), model.encode(xb)]))
    for mode in ("lerp", "slerp"):
        path = model.interpolate(xa, xb, 5, mode=mode)
        assert path.shape == (5, 1, 6, 6)
        torch.testing.assert_close(path[0], ends[0])
        torch.testing.assert_close(path[-1], ends[1])
    mid = model.interpolate(xa, xb, 3, mode="lerp")[1]
    torch.testing.assert_close(mid, model.decode((model.encode(xa[None]) + model.encode(xb)) / 2)[0])

    values = [-2.0, 0.0, 2.0]
    trav = model.traverse(xa, 2, values)
    assert trav.shape == (3, 1, 6, 6)
    z = model.encode(xa[None]).repeat(3, 1)
    z[:, 2] = torch.tensor(values)
    torch.testing.assert_close(trav, model.decode(z))

    with pytest.raises(ConfigError, match="dim"):
        model.traverse(xa, 4, values)
    with pytest.raises(ConfigError, match="mode"):
        model.interpolate(xa, xb, 3, mode="cubic")
    with pytest.raises(ConfigError, match="expected one example"):
        model.interpolate(torch.rand(2, 1, 6, 6), xb, 3)


def test_slerp_keeps_the_norm_between_orthogonal_codes():
    from aecore.models.vae import slerp
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = slerp(a, b, torch.linspace(0, 1, 5).unsqueeze(1))
    torch.testing.assert_close(path.norm(dim=1), torch.full((5,), 3.0))
    torch.testing.assert_close(slerp(a, 2 * a, torch.tensor([[0.5]]))[0], 1.5 * a)  # parallel: lerp


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_vae_shapes(shape):
    model = build_model("conv-vae", input_shape=shape, latent_dim=5, channels=[4, 8])
    x = (torch.rand(3, *shape) > 0.5).float()
    out = model(x)
    assert out.recon.shape == x.shape and out.z.shape == (3, 5) and torch.isfinite(out.loss)
    assert model.sample(2).shape == (2, *shape)
    assert model.interpolate(x[0], x[1], 4, mode="slerp").shape == (4, *shape)
    assert model.traverse(x[0], 0, torch.linspace(-1, 1, 3)).shape == (3, *shape)
    assert model.nll(x, k=4, batch_size=5).shape == (3,)
    assert model.elbo(x).shape == (3,)


def test_conv_vae_supported_shapes():
    cls = type(build_model("conv-vae", input_shape=(1, 28, 28)))
    assert cls.supports((1, 8, 8)) and not cls.supports((1, 7, 28)) and not cls.supports((64,))
    with pytest.raises(ConfigError, match="input shape"):
        build_model("conv-vae", input_shape=(64,))


@pytest.mark.parametrize("name, bad, field", [
    ("vae", {"beta": -1.0}, "beta"),
    ("vae", {"decoder_sigma": 0.0}, "decoder_sigma"),
    ("vae", {"decoder": "poisson"}, "decoder"),
    ("conv-vae", {"channels": [0]}, "channels"),
])
def test_vae_config_validation_names_the_field(name, bad, field):
    with pytest.raises(ConfigError, match=field):
        build_model(name, input_shape=(1, 28, 28), **bad)


def test_nll_rejects_bad_k():
    with pytest.raises(ConfigError, match="k"):
        tiny_vae().nll(torch.rand(2, 16), k=0)


def test_mlp_vae_uses_the_mlp_familys_layers():
    """The shared builder with a double-width encoder (mu, log sigma^2); keys as the shipped VAEs have them."""
    model = tiny_vae(activation="tanh")
    encoder, decoder = mirrored_mlps(input_dim=16, hidden=[24], latent_dim=3, activation="tanh", encoder_outputs=6)
    assert repr(model.encoder) == repr(encoder) and repr(model.decoder) == repr(decoder)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "encoder.0.weight": (24, 16), "encoder.0.bias": (24,), "encoder.2.weight": (6, 24), "encoder.2.bias": (6,),
        "decoder.0.weight": (24, 3), "decoder.0.bias": (24,), "decoder.2.weight": (16, 24), "decoder.2.bias": (16,)}


@pytest.mark.parametrize("name", ["vae", "conv-vae"])
def test_old_act_field_loads_into_activation(name):
    config = make_config(name, {"act": "tanh"})
    assert config.activation == "tanh" and "act" not in config.to_dict()
    with pytest.raises(ConfigError, match="sets both 'act' and 'activation'"):
        make_config(name, {"act": "tanh", "activation": "tanh"})
    with pytest.raises(ConfigError, match="unknown field.*recon_loss"):     # VAEs have no `loss` field
        make_config(name, {"recon_loss": "bce"})


@pytest.mark.parametrize("model_id", sorted(f"{p.parent.name}/{p.name}" for kind in ("vae-*", "conv-vae-*")
                                            for p in SHIPPED.glob(f"*/{kind}")))
def test_shipped_vaes_written_with_act_still_load(model_id):
    written = json.loads((SHIPPED / model_id / "config.json").read_text())["config"]
    assert "act" in written                                             # files from before the rename, unedited
    model = load_pretrained(model_id, root=SHIPPED, device="cpu").model   # manifest hashes and strict keys
    assert model.config.activation == written["act"]
