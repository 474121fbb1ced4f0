"""aecore.lab.units: one unit's view on tiny models, each number checked against a direct computation."""

import numpy as np
import pytest
import torch

from aecore.errors import ConfigError
from aecore.lab import units as un
from aecore.maps import codes_of
from aecore.models import build_model
from tests.helpers import blobs

DATA = blobs(n=120, shape=(1, 6, 6), classes=4)
X = DATA.as_float().reshape(len(DATA), -1)


def tiny(name: str, **config):
    torch.manual_seed(0)
    model = build_model(name, {"input_shape": [1, 6, 6], **config}).eval()
    return model, codes_of(model, DATA).numpy()


def full_mse(model, codes: np.ndarray) -> float:
    with torch.no_grad():
        recon = model.decode(torch.from_numpy(codes)).reshape(len(codes), -1)
    return float((recon - X).pow(2).mean())


def test_ablation_changes_the_mse_by_the_measured_amount():
    model, codes = tiny("sparse-ae", latent_dim=10, penalty="l1")
    basis = un.prepare(model, DATA, codes)
    assert basis.atom_kind == un.ATOM_LINEAR and basis.threshold == 0.0
    assert basis.mse == pytest.approx(full_mse(model, codes), rel=1e-5)
    for unit in range(10):
        zeroed = codes.copy()
        zeroed[:, unit] = 0.0
        measured = full_mse(model, zeroed) - full_mse(model, codes)
        ablation = un.ablate(model, basis, DATA, unit, limit=10_000)
        assert ablation.exact and ablation.stderr == 0.0
        assert ablation.changed == int((codes[:, unit] != 0).sum())
        assert ablation.delta == pytest.approx(measured, rel=1e-4, abs=1e-9)


def test_a_sampled_ablation_estimates_the_change_within_its_error():
    model, codes = tiny("sparse-ae", latent_dim=6, penalty="kl")          # sigmoid: never 0, every image changes
    basis = un.prepare(model, DATA, codes)
    assert basis.threshold == 0.01
    zeroed = codes.copy()
    zeroed[:, 2] = 0.0
    measured = full_mse(model, zeroed) - full_mse(model, codes)
    ablation = un.ablate(model, basis, DATA, 2, limit=60, seed=3)
    assert (ablation.changed, ablation.used) == (120, 60) and not ablation.exact and ablation.stderr > 0
    assert abs(ablation.delta - measured) < 4 * ablation.stderr
    assert un.ablate(model, basis, DATA, 2, limit=60, seed=3).delta == ablation.delta      # seeded


def test_top_images_are_the_top_activations_and_the_rates_are_the_codes():
    model, codes = tiny("sparse-ae", latent_dim=10, penalty="l1")
    basis = un.prepare(model, DATA, codes)
    unit = int(np.argmax((codes > 0).sum(0)))
    view = un.unit_view(model, basis, DATA, unit, n_top=16)
    h = codes[:, unit]
    assert len(view.top) == 16 and len(set(view.top.tolist())) == 16
    assert np.array_equal(view.top_values, h[view.top]) and np.all(np.diff(view.top_values) <= 0)
    assert view.top_values[-1] >= np.sort(h)[::-1][15]                       # no image left out is more active
    assert view.firing_rate == pytest.approx(float((h > 0).mean()))
    assert view.mean_activation == pytest.approx(float(h.mean()))
    assert np.array_equal(np.sort(view.active_values), np.sort(h[h > 0]))
    with pytest.raises(ConfigError, match="out of range"):
        un.unit_view(model, basis, DATA, 10)


def test_similar_atoms_are_sorted_by_cosine():
    atoms = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [-1, 0, 0], [0.5, 0.5, 0], [0, 0, 0]], dtype=np.float32)
    ids, cos = un.similar_atoms(atoms, 0, n=5)
    assert ids.tolist() == [1, 4, 2, 5, 3]                    # the zero atom has cosine 0, ties by unit id
    assert np.all(np.diff(cos) <= 0) and cos[0] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert cos[-1] == pytest.approx(-1.0) and 0 not in ids

    model, codes = tiny("sparse-ae", latent_dim=12, penalty="l1")
    basis = un.prepare(model, DATA, codes)
    ids, cos = un.similar_atoms(basis.atoms, 4, n=5)
    a = basis.atoms / np.linalg.norm(basis.atoms, axis=1, keepdims=True)
    brute = a @ a[4]
    brute[4] = -np.inf
    assert ids.tolist() == np.argsort(-brute, kind="stable")[:5].tolist()
    assert np.allclose(cos, brute[ids], atol=1e-6)


def test_atoms_follow_what_the_decoder_is():
    model, codes = tiny("rank-ordered-ae", latent_dim=8)
    basis = un.prepare(model, DATA, codes)
    assert basis.atom_kind == un.ATOM_TIED and np.allclose(basis.atoms, model.weight.detach().t().numpy())
    assert basis.filters is not None and basis.filters.shape == (8, 1, 6, 6)

    model, codes = tiny("ae", hidden=[16], latent_dim=4)                  # a deeper decoder: its local effect
    basis = un.prepare(model, DATA, codes)
    assert basis.atom_kind == un.ATOM_EFFECT and basis.filters is None
    z = torch.from_numpy(codes.mean(0)).repeat(2, 1)
    z[1, 3] += float(codes[:, 3].std())
    with torch.no_grad():
        out = model.decode(z).reshape(2, -1)
    assert np.allclose(basis.atoms[3], (out[1] - out[0]).numpy(), atol=1e-6)
    assert un.atom_images(basis, [3, 1]).shape == (2, 1, 6, 6)


def test_a_code_the_reconstruction_bypasses_has_no_ablation():
    data = blobs(n=8, shape=(1, 8, 8))
    model = build_model("unet", {"input_shape": [1, 8, 8], "base_channels": 4, "depth": 2, "latent_dim": 4}).eval()
    basis = un.prepare(model, data, codes_of(model, data))
    assert basis.sse is None and "skip connections" in basis.no_ablation
    view = un.unit_view(model, basis, data, 0)
    assert view.ablation is None and len(view.top) == 8


def test_codes_of_another_split_are_refused():
    model, codes = tiny("sparse-ae", latent_dim=4, penalty="l1")
    with pytest.raises(ConfigError, match="not this test split"):
        un.prepare(model, DATA, codes[:50])


def test_the_histogram_shows_only_where_the_unit_is_on():
    model, codes = tiny("sparse-ae", latent_dim=10, penalty="l1")
    basis = un.prepare(model, DATA, codes)
    unit = int(np.argmax((codes > 0).sum(0)))
    view = un.unit_view(model, basis, DATA, unit)
    fig = un.activation_figure(view, basis.threshold)
    assert sum(fig.data[0].y) == int((codes[:, unit] > 0).sum())
    dead = un.UnitView(unit=1, top=view.top, top_values=view.top_values, active_values=np.array([]), firing_rate=0.0,
                       mean_activation=0.0, ablation=None, similar=view.similar, similar_cos=view.similar_cos)
    assert "never on" in un.activation_figure(dead, 0.0).layout.title.text
