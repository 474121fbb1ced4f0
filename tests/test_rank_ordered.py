"""Rank ordered autoencoder (Bertens 2016): TReLU's custom gradient, ranking, partial reconstructions,
and the author's reference update rule (the default), through the one trainer."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from aecore import distributed
from aecore.errors import ConfigError
from aecore.models import build_model
from aecore.models import rank_ordered_ae as roae
from aecore.models.rank_ordered_ae import RankOrderedAE, RankOrderedAEConfig, TReLU, reference_update
from aecore.store import load_model, save_model
from aecore.train import CHECKPOINT_NAME, Callback, TrainConfig, Trainer
from tests.helpers import blobs


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
    model = build_model("rank-ordered-ae", input_shape=list(shape), latent_dim=units, rule="gradient")
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


# --- the reference rule ------------------------------------------------------------------------------
def test_reference_update_by_hand():
    """D = 3 inputs, 2 units, x = target = [0.5, 0.5, 0]; W's columns W_0 = [1.5, 1.5, 1.5],
    W_1 = [-0.9, 0, -0.15] (weight_t holds them as rows).

    a = x W / 3 = [1.5 / 3, -0.45 / 3] = [0.5, -0.15]; h = [0.5, 0]; rank: unit 0, then unit 1.
    R_1 = clip(0.5 W_0) = [0.75, 0.75, 0.75]; R_2 = R_1 (h_1 = 0). Mean over k of ||x - R_k||^2:
    0.0625 + 0.0625 + 0.5625 = 0.6875.
    Unit 0: E_0 = x - R_1 = [-0.25, -0.25, -0.75]; e_0 = E_0 . W_0 / 3 = -1.875 / 3 = -0.625: its sign
    differs from a_0's, so it passes, clipped to -a_0 = -0.5 (never past a = 0).
    G_0 = E_0 h_0 + x e_0 = [-0.125, -0.125, -0.375] + [-0.25, -0.25, 0] = [-0.375] * 3, norm
    0.375 sqrt(3) = 0.65 > 0.1: scaled to norm 0.1, each entry -0.1 / sqrt(3) = -0.0577350.
    Unit 1: E_1 = x - R_2 = E_0; e_1 = (0.225 + 0 + 0.1125) / 3 = 0.1125 > 0 > a_1: passes, and
    0.1125 < -a_1 = 0.15, so unclipped. G_1 = 0 + x e_1 = [0.05625, 0.05625, 0], norm 0.0795 < 0.1.
    lr = 1: W_0 -> 1.5 - 0.0577350 = 1.4422650 each; W_1 -> [-0.84375, 0.05625, -0.15].
    """
    weight_t = np.array([[1.5, 1.5, 1.5], [-0.9, 0.0, -0.15]], dtype=np.float32)
    x = np.array([0.5, 0.5, 0.0], dtype=np.float32)
    sse, recon, h = reference_update(weight_t, x, x, lr=1.0, norm_limit=0.1)
    assert sse == pytest.approx(0.6875, abs=1e-6)
    np.testing.assert_allclose(recon, [0.75, 0.75, 0.75], atol=1e-7)
    np.testing.assert_allclose(h, [0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(weight_t, [[1.4422650] * 3, [-0.84375, 0.05625, -0.15]], atol=1e-6)


def test_reference_update_blocks_errors_that_would_grow_an_activation():
    """x = [1, 0, 0], W_0 = [0.6, 0, 0], W_1 = [-0.3, 0.3, 0]: a = [0.2, -0.1], h = [0.2, 0].
    R_1 = R_2 = [0.12, 0, 0]; E = [0.88, 0, 0]. e_0 = 0.88 * 0.6 / 3 > 0 like a_0: blocked, so
    G_0 = E h_0 = [0.176, 0, 0] (norm 0.176, scaled to 0.1: [0.1, 0, 0]). e_1 = 0.88 * -0.3 / 3 < 0
    like a_1: blocked, G_1 = 0: an inactive unit whose error points away from 0 is left alone."""
    weight_t = np.array([[0.6, 0.0, 0.0], [-0.3, 0.3, 0.0]], dtype=np.float32)
    x = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    reference_update(weight_t, x, x, lr=1.0, norm_limit=0.1)
    np.testing.assert_allclose(weight_t, [[0.7, 0.0, 0.0], [-0.3, 0.3, 0.0]], atol=1e-6)


def _dense_rule(w: np.ndarray, x: np.ndarray, lr: float = 1.0, limit: float = 0.1) -> None:
    """The rule as the reference code states it, all units dense, W (D, n) in place: every unit's
    cumulative sum, error, sign gate, clip at 0 and column norm clip."""
    d, n = w.shape
    a = x @ w / d
    h = np.clip(a, 0, 1)
    order = np.argsort(-a, kind="stable")
    recon = np.zeros_like(w)
    recon[:, order] = np.clip(np.cumsum(w[:, order] * h[order], axis=1), 0, 1)
    errors = x[:, None] - recon
    e = (errors * w).sum(axis=0) / d
    e = e * (np.sign(a) != np.sign(e))
    e[a > 0] = np.maximum(-a[a > 0], e[a > 0])
    e[a < 0] = np.minimum(-a[a < 0], e[a < 0])
    g = errors * h + np.outer(x, e)
    norm = np.sqrt((g ** 2).sum(axis=0))
    g[:, norm > limit] *= limit / norm[norm > limit]
    w += lr * g


def test_fast_update_equals_the_dense_rule_example_after_example():
    rng = np.random.default_rng(0)
    d, n = 12, 9
    w = (rng.standard_normal((d, n)) * 0.4).astype(np.float32)
    weight_t = np.ascontiguousarray(w.T)
    for x in rng.random((40, d)).astype(np.float32):
        _dense_rule(w, x)
        reference_update(weight_t, x, x, lr=1.0, norm_limit=0.1)
        np.testing.assert_allclose(weight_t.T, w, atol=1e-5)


def test_encoder_path_only_shrinks_activations():
    """An inactive unit (a < 0) learns only through the encoder path, x e_j: on the same input its
    pre-activation moves toward 0 and never past it."""
    rng = np.random.default_rng(1)
    d, n = 20, 15
    moved = 0
    for _ in range(200):
        weight_t = (rng.standard_normal((n, d)) * 0.5).astype(np.float32)
        x = rng.random(d).astype(np.float32)
        before = weight_t @ x / d
        reference_update(weight_t, x, x, lr=1.0, norm_limit=0.1)
        after = weight_t @ x / d
        off = before < 0
        assert (after[off] <= 1e-7).all() and (after[off] >= before[off] - 1e-7).all()
        moved += int((after[off] > before[off] + 1e-6).sum())
    assert moved >= 20                       # the rule did act on inactive units (44 here)


def test_each_units_update_is_norm_clipped():
    rng = np.random.default_rng(2)
    d, n = 30, 20
    weight_t = (rng.standard_normal((n, d)) * 3).astype(np.float32)
    x = rng.random(d).astype(np.float32)
    start = weight_t.copy()
    reference_update(weight_t, x, x, lr=1.0, norm_limit=0.1)
    norms = np.linalg.norm(weight_t - start, axis=1)                          # (n,) one per unit
    assert norms.max() <= 0.1 + 1e-6
    assert np.isclose(norms, 0.1, atol=1e-5).sum() >= n // 2                  # large errors hit the clip
    small = (rng.standard_normal((n, d)) * 3).astype(np.float32)
    before = small.copy()
    reference_update(small, x, x, lr=1.0, norm_limit=50.0)                    # no clip: steps grow
    assert np.linalg.norm(small - before, axis=1).max() > 0.1


def test_reference_is_the_default_and_old_configs_mean_gradient(tmp_path):
    assert RankOrderedAEConfig().rule == "reference"
    old = {"init_scale": 1.0, "input_shape": [3, 7, 7], "latent_dim": 6}    # a config.json before `rule`
    assert RankOrderedAEConfig.from_saved(old).rule == "gradient"
    assert RankOrderedAEConfig.from_dict(old).rule == "reference"            # a new model from the same fields
    assert RankOrderedAEConfig.from_saved({**old, "rule": "reference"}).rule == "reference"
    model = build_model("rank-ordered-ae", old, rule="gradient")
    save_model(model, tmp_path / "m")
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("rule", "step_size", "norm_limit"):
        del info["config"][key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(info))
    loaded = load_model(tmp_path / "m").model
    assert loaded.config.rule == "gradient" and not loaded.updates_itself()
    assert torch.equal(loaded.weight, model.weight)
    with pytest.raises(ConfigError, match="rule"):
        RankOrderedAEConfig.from_dict({**old, "rule": "hebbian"})


def test_reference_init_is_the_reference_codes():
    torch.manual_seed(0)
    model = build_model("rank-ordered-ae", input_shape=[3, 7, 7], latent_dim=169)
    d, n = 147, 169
    assert model.weight.std().item() == pytest.approx((2 / (d + n)) ** 0.5, rel=0.02)
    assert abs(model.weight.mean().item()) < 0.002
    old = build_model("rank-ordered-ae", input_shape=[3, 7, 7], latent_dim=169, rule="gradient")
    assert old.weight.abs().max() <= 1.0 and old.weight.abs().max() > 0.99                 # U(-1, 1)


def test_trainer_applies_the_models_own_update():
    """Through the one trainer: no optimiser step (Adam keeps no state), the weights move as
    update_step moves them, the logged loss is the rule's, validation uses forward."""
    data = blobs(n=64, shape=(1, 8, 8))
    torch.manual_seed(0)
    model = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=12)
    twin = build_model("rank-ordered-ae", model.config.to_dict())
    twin.load_state_dict(model.state_dict())
    trainer = Trainer(model, data, config=TrainConfig(epochs=3, batch_size=16, seed=5), val=data)
    result = trainer.fit()
    assert trainer.optimizer.state_dict()["state"] == {}
    losses = [row["train"]["loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0] and result.history[-1]["val"]["loss"] < losses[0]
    # the same batches by hand (the trainer's permutation for each epoch) give the same weights
    from aecore.train import _epoch_seed
    x_all = data.as_float().view(-1, 1, 8, 8)
    for epoch in range(3):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(_epoch_seed(5, 0, epoch)))
        for b in range(4):
            twin.update_step(x_all[order[b * 16:(b + 1) * 16]])
    assert torch.allclose(model.weight, twin.weight, atol=1e-6)


def test_reference_training_resumes_exactly(tmp_path):
    data = blobs(n=64, shape=(1, 8, 8))
    config = TrainConfig(epochs=3, batch_size=16, seed=2)
    torch.manual_seed(0)
    full = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=12)
    start = {k: v.clone() for k, v in full.state_dict().items()}
    Trainer(full, data, config=config).fit()
    part = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=12)
    part.load_state_dict(start)
    cancel = threading.Event()

    class StopInEpoch2(Callback):
        def on_batch_end(self, state):
            if state.epoch == 1 and state.batch == 2:
                cancel.set()

    assert Trainer(part, data, config=config, checkpoint_dir=tmp_path, callbacks=[StopInEpoch2()],
                   cancel=cancel).fit().cancelled
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    resumed = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=12)
    result = Trainer(resumed, data, config=config, checkpoint_dir=tmp_path).fit(resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert torch.allclose(resumed.weight, full.weight, atol=1e-6)


def test_update_step_refused_for_the_gradient_rule_and_ddp(monkeypatch):
    gradient = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=4, rule="gradient")
    with pytest.raises(ConfigError, match="trains by gradient"):
        gradient.update_step(torch.rand(2, 1, 8, 8))
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "backend", lambda: "gloo")
    monkeypatch.setattr(distributed, "first_disagreeing_rank", lambda value: None)
    reference = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=4)
    with pytest.raises(ConfigError, match="its own update rule"):
        Trainer(reference, blobs(n=40), config=TrainConfig(batch_size=8))
    Trainer(gradient, blobs(n=40), config=TrainConfig(batch_size=8))          # the gradient rule: fine


def test_eval_metrics_report_quiet_units_and_anytime_errors():
    model = build_model("rank-ordered-ae", input_shape=[1, 8, 8], latent_dim=12)
    x = torch.rand(5, 1, 8, 8)
    metrics = model.eval_metrics(x)
    assert set(metrics) == {"population_sparsity", "units_below_0.05", "mse_top1", "mse_top5", "mse_top10"}
    errors = model.progressive_errors(x) / 64
    assert torch.allclose(metrics["mse_top5"], errors[:, 4])
    assert (metrics["units_below_0.05"] >= metrics["population_sparsity"]).all()


@pytest.mark.shared_data
def test_reference_rule_gets_sparser_than_the_gradient_rule_on_cifar_patches(shared_data):
    """10,000 real 7x7 colour patches, one epoch each (measured: the reference rule leaves 98.4 % of
    the activations of held-out patches below 0.05, the gradient rule 79 %, at ten times its R_10 error)."""
    from aecore.data import load_dataset

    train = load_dataset("cifar10-patches", "train", data_dir=shared_data, count=10_000)
    test = load_dataset("cifar10-patches", "test", data_dir=shared_data, count=2_000)
    x = test.as_float().view(-1, 3, 7, 7)
    found = {}
    for rule in ("reference", "gradient"):
        torch.manual_seed(0)
        model = build_model("rank-ordered-ae", input_shape=[3, 7, 7], latent_dim=169, rule=rule)
        Trainer(model, train, config=TrainConfig(epochs=1, batch_size=128, lr=1e-3)).fit()
        found[rule] = {k: float(v.mean()) for k, v in model.eval_metrics(x).items()}
    ref, grad = found["reference"], found["gradient"]
    assert ref["units_below_0.05"] > 0.95 > grad["units_below_0.05"]
    assert ref["population_sparsity"] > grad["population_sparsity"]
    assert ref["mse_top10"] < grad["mse_top10"]
