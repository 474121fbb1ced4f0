"""topk-ae: the k-sparse code, AuxK's reach, the decoder's unit-norm atoms, the tied start, batch top-k,
and the state it keeps across batches (dead-unit counters, b_pre's one-time init)."""

import pytest
import torch

from aecore.models import build_model
from aecore.models.topk_ae import geometric_median

SHAPE = (1, 12, 12)
D = 144


def model(**overrides):
    torch.manual_seed(0)
    return build_model("topk-ae", dict({"input_shape": list(SHAPE), "latent_dim": 64, "k": 5}, **overrides))


def batch(n=16, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_top_k_keeps_exactly_k_units_per_example():
    m, x = model(), batch()
    out = m(x)                                                          # a training batch
    assert ((out.z != 0).sum(1) == 5).all() and (out.z >= 0).all()
    m.eval()
    z = m.encode(x)
    assert ((z != 0).sum(1) == 5).all()
    a = m.pre_activations(x)
    kept = a.gather(1, z.topk(5).indices)                               # the units kept are the largest
    assert (kept.min(1).values >= a.topk(5).values[:, -1]).all()


def test_encoder_starts_as_the_decoders_transpose_with_unit_atoms():
    m = model()
    assert torch.equal(m.encoder.weight, m.decoder.weight.t())
    assert torch.allclose(m.decoder.weight.norm(dim=0), torch.ones(64))


def test_decoder_atoms_stay_unit_norm_after_steps():
    m, x = model(), batch()
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        m(x).loss.backward()
        opt.step()
    assert torch.allclose(m.decoder.weight.norm(dim=0), torch.ones(64), atol=1e-6)
    assert not torch.equal(m.encoder.weight, m.decoder.weight.t())      # both moved, each its own way


def test_auxk_gradient_reaches_only_dead_units():
    m, x = model(k=3, dead_after=1000), batch(8)
    m(x)                                                                 # first training batch: b_pre's init
    with torch.no_grad():
        silent = m.encode(x).eq(0).all(0)                                # (n,) units off for every example
    assert 10 < int(silent.sum()) < 64
    m.since_fired.copy_(torch.where(silent, 1000, 0))
    out = m(x)
    dead = m.dead_units()
    assert torch.equal(dead, silent)
    assert out.parts["auxk"].item() > 0
    m.zero_grad()
    out.parts["auxk"].backward()
    touched = m.encoder.weight.grad.abs().sum(1) > 0                     # (n,) encoder rows with gradient
    assert touched.any() and not (touched & ~dead).any()
    assert not (m.encoder.bias.grad.ne(0) & ~dead).any()
    columns = m.decoder.parametrizations.weight.original.grad.abs().sum(0) > 0
    assert columns.any() and not (columns & ~dead).any()


def test_auxk_is_zero_while_no_unit_is_dead():
    m, x = model(dead_after=10**6), batch()
    out = m(x)
    assert out.parts["auxk"].item() == 0.0
    assert torch.equal(out.loss, out.parts["recon"] + out.parts["auxk"])
    assert "auxk" not in model(aux_alpha=0.0)(x).parts


def test_dead_counters_count_examples_since_a_unit_fired():
    m, x = model(), batch(16)
    out = m(x)
    fired = (out.z > 0).any(0)
    assert torch.equal(m.since_fired, torch.where(fired, 0, 16))
    m.eval()
    m(x)                                                                 # evaluation leaves the counters alone
    assert torch.equal(m.since_fired, torch.where(fired, 0, 16))
    assert int(m.steps) == 1


def test_batch_top_k_keeps_k_times_b_units_per_batch():
    m, x = model(batch_topk=True), batch(16)
    out = m(x)
    per_example = (out.z != 0).sum(1)
    assert int(per_example.sum()) == 5 * 16
    assert int(per_example.min()) != int(per_example.max())             # shared out unevenly, as it should be
    assert float(m.theta) > 0
    m.eval()                                                             # evaluation: a threshold, per example
    with torch.no_grad():
        z, a = m.encode(x), m.pre_activations(x)
        alone = torch.cat([m.encode(x[i:i + 1]) for i in range(16)])
    assert torch.allclose(z, alone, atol=1e-6)                           # batch-mates change nothing (to rounding)
    assert torch.equal(z != 0, a > m.theta)


def test_b_pre_starts_at_the_first_batchs_geometric_median_once():
    m, x = model(), batch(32)
    m(x)
    assert torch.allclose(m.b_pre, geometric_median(x.reshape(32, D)))
    again = model()
    again.load_state_dict(m.state_dict())                               # a resumed run keeps its b_pre
    again(batch(32, seed=1))
    assert torch.equal(again.b_pre, m.b_pre)


def test_geometric_median_beats_the_mean_on_outliers():
    points = torch.cat([torch.zeros(9, 2), torch.tensor([[100.0, 100.0]])])
    assert geometric_median(points).norm() < 1e-3 < points.mean(0).norm()


def test_eval_metrics_report_zeros_l0_and_flagged_dead_units():
    m, x = model(dead_after=10), batch(16)
    m(x)
    m.eval()
    metrics = m.eval_metrics(x)
    assert torch.allclose(metrics["population_sparsity"], torch.full((16,), 59 / 64))
    assert torch.equal(metrics["l0"], torch.full((16,), 5.0))
    assert torch.allclose(metrics["dead_units_train"], m.dead_units().float().mean().expand(16))


def test_training_state_keeps_it_to_one_process():
    assert model().loss_is_example_mean() is False


@pytest.mark.parametrize("field, value", [("k", 65), ("k", 0), ("aux_k", 65), ("aux_alpha", -1.0), ("dead_after", 0)])
def test_config_refuses(field, value):
    from aecore.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        model(**{field: value})
