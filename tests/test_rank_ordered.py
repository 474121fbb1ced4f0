"""Rank ordered autoencoder (Bertens 2016): TReLU's custom gradient, ranking, partial reconstructions."""

from __future__ import annotations

import pytest
import torch

from aecore.errors import ConfigError
from aecore.models import build_model
from aecore.models import rank_ordered_ae as roae
from aecore.models.rank_ordered_ae import RankOrderedAE, RankOrderedAEConfig, TReLU


def _hand_model() -> RankOrderedAE:
    """D=2, 3 units; for x = [1, 1]: a = column sums / 2 = [0.3, 0.8, 0.5]."""
    model = RankOrderedAE(config=RankOrderedAEConfig(input_shape=(2,), latent_dim=3))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.6, 0.2],
                                         [0.1, 1.0, 0.8]]))
    return model


def test_trelu_forward_is_clamp():
    a = torch.linspace(-3, 3, 61)
    assert torch.equal(TReLU.apply(a), a.clamp(0, 1))


def test_trelu_backward_follows_push_back_rule():
    a = torch.tensor([-1.0, -1.0, 0.5, 0.5, 2.0, 2.0, 0.0, 1.0, -0.1, 1.1], requires_grad=True)
    g = torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 3.0, -2.0, -0.5, 0.25])
    TReLU.apply(a).backward(g)
    # below 0: only g < 0 (descent raises a); inside [0, 1]: unchanged; above 1: only g > 0.
    expected = torch.tensor([-1.0, 0.0, -1.0, 1.0, 0.0, 1.0, 3.0, -2.0, -0.5, 0.25])
    assert torch.equal(a.grad, expected)


def test_partial_reconstructions_by_hand():
    model = _hand_model()
    x = torch.ones(1, 2)
    h = model.encode(x)
    assert torch.allclose(h, torch.tensor([[0.3, 0.8, 0.5]]))
    # rank order: unit 1 (0.8), unit 2 (0.5), unit 0 (0.3); terms [.48,.8], [.1,.4], [.15,.03]
    r1 = torch.tensor([[0.48, 0.8]])
    r2 = torch.tensor([[0.58, 1.0]])   # 1.2 clipped
    r3 = torch.tensor([[0.73, 1.0]])   # 1.23 clipped
    for k, want in [(1, r1), (2, r2), (3, r3)]:
        assert torch.allclose(model.anytime_reconstruction(x, k), want, atol=1e-6)
    assert torch.equal(model.anytime_reconstruction(x, 0), torch.zeros(1, 2))
    out = model(x)
    sse = torch.tensor([[0.3104, 0.1764, 0.0729]])
    assert torch.allclose(out.extras["progressive_sse"], sse, atol=1e-5)
    assert out.loss.item() == pytest.approx(sse.mean().item(), abs=1e-5)
    assert torch.allclose(out.recon, r3, atol=1e-6)
    assert torch.allclose(model.progressive_errors(x), sse, atol=1e-5)


def test_anytime_bad_k_is_refused():
    model = _hand_model()
    with pytest.raises(ConfigError, match="k = 4"):
        model.anytime_reconstruction(torch.ones(1, 2), 4)


def _loop_reference(model: RankOrderedAE, x: torch.Tensor) -> torch.Tensor:
    """Per-example Python loop over ranked units: the partial SSEs, (B, n)."""
    w = model.weight.detach()
    h = (x.flatten(1) @ w / w.shape[0]).clamp(0, 1)
    rows = []
    for b in range(x.shape[0]):
        order = sorted(range(h.shape[1]), key=lambda j: -h[b, j].item())
        total, errs = torch.zeros(w.shape[0]), []
        for j in order:
            total = total + w[:, j] * h[b, j]
            errs.append(((total.clamp(0, 1) - x[b].flatten()) ** 2).sum())
        rows.append(torch.stack(errs))
    return torch.stack(rows)


def test_progressive_errors_match_loop_and_full_recon():
    model = build_model("rank-ordered-ae", input_shape=[3, 7, 7], latent_dim=20)
    x = torch.rand(4, 3, 7, 7)
    assert torch.allclose(model.progressive_errors(x), _loop_reference(model, x), atol=1e-4)
    full = model.anytime_reconstruction(x, 20)
    assert torch.allclose(full, model(x).recon, atol=1e-5)
    assert torch.allclose(full, model.reconstruct(x), atol=1e-5)


def test_chunked_checkpointed_loss_equals_unchunked(monkeypatch):
    model = build_model("rank-ordered-ae", input_shape=[16], latent_dim=12)
    x = torch.rand(5, 16)
    out = model(x)
    out.loss.backward()
    grad = model.weight.grad.clone()
    model.weight.grad = None
    monkeypatch.setattr(roae, "CHUNK_ELEMENTS", 5 * 16 * 5)   # chunks of 5 ranks -> 3 checkpoints
    chunked = model(x)
    chunked.loss.backward()
    assert torch.allclose(chunked.extras["progressive_sse"], out.extras["progressive_sse"], atol=1e-5)
    assert torch.allclose(model.weight.grad, grad, atol=1e-5)


def test_population_sparsity():
    model = _hand_model()
    with torch.no_grad():
        model.weight[:, 0] = -model.weight[:, 0]   # unit 0 now has a < 0 for non-negative inputs
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    sparsity = model.eval_metrics(x)["population_sparsity"]
    assert torch.allclose(sparsity, torch.tensor([1 / 3, 1.0]))


@pytest.mark.parametrize("shape, units", [((3, 7, 7), 169), ((1, 28, 28), 16), ((64,), 16)])
def test_shapes_and_loss_falls(shape, units):
    model = build_model("rank-ordered-ae", input_shape=list(shape), latent_dim=units)
    # structured data: a few prototypes plus a little noise
    protos = torch.rand(4, *shape)
    x = (protos[torch.arange(32) % 4] + 0.05 * torch.randn(32, *shape)).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(30):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = out.loss.item() if first is None else first
    assert out.recon.shape == x.shape and out.z.shape == (32, units)
    assert set(out.parts) == {"recon"} and out.extras["progressive_sse"].shape == (32, units)
    assert model(x).loss.item() < 0.6 * first
    assert ((out.z >= 0) & (out.z <= 1)).all()


def test_config_rejects_bad_init_scale():
    with pytest.raises(ConfigError, match="init_scale"):
        RankOrderedAEConfig.from_dict({"init_scale": 0})
