import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from aecore.errors import ConfigError
from aecore.noise import Noise, gaussian, make_generator, masking, parse_noise, salt_and_pepper


def _x(b=8, shape=(1, 10, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(b, *shape, generator=g)  # strictly inside (0, 1): changes are visible


def test_masking_sets_exact_fraction_to_zero():
    x = _x()
    y = masking(x, 0.3, generator=make_generator(1))
    zeroed = (y == 0).flatten(1).sum(1)
    assert zeroed.tolist() == [30] * 8
    untouched = y != 0
    assert torch.equal(y[untouched], x[untouched])


def test_salt_and_pepper_sets_fraction_to_min_or_max_evenly():
    x = _x(b=64)
    y = salt_and_pepper(x, 0.2, generator=make_generator(2))
    changed = y != x
    assert changed.flatten(1).sum(1).tolist() == [20] * 64
    assert set(torch.unique(y[changed]).tolist()) == {0.0, 1.0}
    salt_share = (y[changed] == 1.0).float().mean().item()
    assert 0.45 < salt_share < 0.55


def test_gaussian_adds_sigma_noise_and_clips():
    x = torch.full((4000, 1, 5, 5), 0.5)
    y = gaussian(x, 0.1, generator=make_generator(3))
    assert y.min() >= 0 and y.max() <= 1
    assert abs((y - x).std().item() - 0.1) < 0.005
    assert abs((y - x).mean().item()) < 0.005
    z = gaussian(x, 2.0, generator=make_generator(3))
    assert z.min() == 0 and z.max() == 1  # clipped to the data range


def test_seeded_noise_is_reproducible_and_seed_dependent():
    x = _x()
    for noise in (Noise("gaussian", 0.3), Noise("masking", 0.5), Noise("saltpepper", 0.2)):
        a = noise(x, generator=make_generator(7))
        b = noise(x, generator=make_generator(7))
        c = noise(x, generator=make_generator(8))
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("spec, kind, level", [
    ("gaussian:0.5", "gaussian", 0.5), ("masking:0.25", "masking", 0.25),
    ("saltpepper:0.2", "saltpepper", 0.2), ("salt-and-pepper:0.1", "saltpepper", 0.1),
])
def test_parse_noise(spec, kind, level):
    assert parse_noise(spec) == Noise(kind, level)


@pytest.mark.parametrize("spec, message", [
    ("blur:0.5", "unknown noise 'blur'"), ("masking", "needs a level"), ("masking:abc", "not a number"),
    ("masking:1.5", "in [0, 1]"), ("gaussian:-0.1", "sigma must be in"), ("saltpepper:nan", "must be"),
])
def test_bad_noise_specs_are_refused_clearly(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_noise(spec)


def test_none_means_clean():
    assert parse_noise(None) is None and parse_noise("none") is None and parse_noise("") is None


@settings(max_examples=40, deadline=None)
@given(nu=st.floats(0, 1), batch=st.integers(1, 5), dim=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_fraction_noises_hold_their_definition(nu, batch, dim, seed):
    x = 0.1 + 0.8 * torch.rand(batch, dim, generator=torch.Generator().manual_seed(seed))
    expected = round(nu * dim)
    masked = masking(x, nu, generator=make_generator(seed))
    assert ((masked == 0).sum(1) == expected).all()
    sp = salt_and_pepper(x, nu, generator=make_generator(seed))
    assert ((sp != x).sum(1) == expected).all()
    assert ((sp == 0) | (sp == 1) | (sp == x)).all()


@settings(max_examples=30, deadline=None)
@given(sigma=st.floats(0, 10), seed=st.integers(0, 2**31))
def test_gaussian_stays_in_range(sigma, seed):
    x = torch.rand(3, 20, generator=torch.Generator().manual_seed(seed))
    y = gaussian(x, sigma, generator=make_generator(seed))
    assert y.shape == x.shape and (y >= 0).all() and (y <= 1).all()
