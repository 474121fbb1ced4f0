"""Property-based tests: the noise functions and config validation hold for any input Hypothesis finds.

Noise: output in the data range, shape/dtype kept, exactly round(nu * D) components corrupted per
example, salt and pepper equally likely, seeded runs identical, zero noise is the identity.
Configs: any out-of-range or ill-typed value is refused with a ConfigError that names the field;
any in-range value is accepted as given. Examples are few (about 25 each): the file runs in seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from aecore.errors import ConfigError
from aecore.models import list_models, make_config
from aecore.models.vae import MIN_DECODER_SIGMA
from aecore.noise import MAX_SIGMA, Noise, make_generator, parse_noise
from aecore.train import MAX_BATCH, MAX_EPOCHS, TrainConfig

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

kinds = st.sampled_from(["gaussian", "masking", "saltpepper"])
dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16])
shapes = st.one_of(
    st.tuples(st.integers(0, 4), st.integers(1, 40)),                                        # flat vectors
    st.tuples(st.integers(0, 3), st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9)),   # images
)
seeds = st.integers(0, 2**31 - 1)


def level_for(kind: str):
    return st.floats(0, MAX_SIGMA) if kind == "gaussian" else st.floats(0, 1)


def batch(shape, dtype, seed: int, *, inside: bool = False) -> torch.Tensor:
    """Values in [0, 1]; strictly inside (0, 1) when `inside`, so any change is visible."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = 0.05 + 0.9 * x if inside else x
    return x.to(dtype)


# --- noise ------------------------------------------------------------------------------------------
@FEW
@given(data=st.data(), kind=kinds, shape=shapes, dtype=dtypes, seed=seeds)
def test_noise_keeps_shape_dtype_and_the_data_range(data, kind, shape, dtype, seed):
    noise = Noise(kind, data.draw(level_for(kind)))
    x = batch(shape, dtype, seed)
    y = noise(x, generator=make_generator(seed))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert bool(((y >= 0) & (y <= 1)).all())
    assert torch.equal(x, batch(shape, dtype, seed))          # the input is left untouched


@FEW
@given(kind=st.sampled_from(["masking", "saltpepper"]), nu=st.floats(0, 1), shape=shapes, seed=seeds)
def test_fraction_corrupted_is_nu(kind, nu, shape, seed):
    """Each example has exactly round(nu * D) corrupted components: within 1/(2D) of nu, for every
    example (not just on average, as a Bernoulli(nu) draw would be)."""
    x = batch(shape, torch.float32, seed, inside=True)
    y = Noise(kind, nu)(x, generator=make_generator(seed))
    if x.shape[0] == 0:
        return
    d = x[0].numel()
    changed = (y != x).flatten(1).sum(1)
    assert (changed == round(nu * d)).all()
    assert ((changed.double() / d - nu).abs() <= 0.5 / d + 1e-9).all()   # float64: 2/3 in float32 rounds up
    corrupted = y[y != x]
    allowed = (corrupted == 0) if kind == "masking" else (corrupted == 0) | (corrupted == 1)
    assert bool(allowed.all())


@settings(max_examples=15, deadline=None)
@given(nu=st.floats(0.05, 1), seed=seeds)
def test_salt_and_pepper_are_equally_likely(nu, seed):
    x = batch((64, 100), torch.float32, seed, inside=True)
    y = Noise("saltpepper", nu)(x, generator=make_generator(seed))
    n = int((y != x).sum())
    salt = int((y == 1).sum())
    assert abs(salt - n / 2) <= 5 * math.sqrt(n / 4) + 1      # Binomial(n, 1/2), 5 standard deviations


@FEW
@given(data=st.data(), kind=kinds, shape=shapes, dtype=dtypes, seed=seeds)
def test_noise_is_reproducible_with_a_seed(data, kind, shape, dtype, seed):
    noise = Noise(kind, data.draw(level_for(kind)))
    x = batch(shape, dtype, seed)
    assert torch.equal(noise(x, generator=make_generator(seed)), noise(x, generator=make_generator(seed)))


@FEW
@given(kind=kinds, shape=shapes, dtype=dtypes, seed=seeds)
def test_zero_noise_is_the_identity(kind, shape, dtype, seed):
    x = batch(shape, dtype, seed)
    assert torch.equal(Noise(kind, 0.0)(x, generator=make_generator(seed)), x)


@settings(max_examples=15, deadline=None)
@given(sigma=st.floats(0.005, 0.1), seed=seeds)
def test_gaussian_noise_has_standard_deviation_sigma(sigma, seed):
    """Away from the clipping edges (x = 0.5, sigma <= 0.1) the added noise has std sigma."""
    x = torch.full((50, 100), 0.5, dtype=torch.float64)
    z = Noise("gaussian", sigma)(x, generator=make_generator(seed)) - x
    n = z.numel()
    assert abs(float(z.std()) / sigma - 1) <= 6 / math.sqrt(2 * n)   # the std estimate's spread
    assert abs(float(z.mean())) <= 6 * sigma / math.sqrt(n)


out_of_range_noise = st.one_of(
    st.builds(lambda v: f"gaussian:{v!r}", st.floats(max_value=0, exclude_max=True, allow_nan=False)),
    st.builds(lambda v: f"gaussian:{v!r}", st.floats(min_value=MAX_SIGMA, exclude_min=True)),
    st.builds(lambda k, v: f"{k}:{v!r}", st.sampled_from(["masking", "saltpepper"]),
              st.floats(max_value=0, exclude_max=True, allow_nan=False)
              | st.floats(min_value=1, exclude_min=True) | st.just(float("nan"))),
)


@FEW
@given(spec=out_of_range_noise)
def test_out_of_range_noise_is_refused(spec):
    with pytest.raises(ConfigError):
        parse_noise(spec)
    with pytest.raises(ConfigError, match="noise"):               # a recipe names the field
        TrainConfig.from_dict({"noise": spec})


# --- config validation --------------------------------------------------------------------------
# (model, field, integer?, lo, hi, lo_open, hi_open): the ranges the configs document
MODEL_FIELDS = [
    ("ae", "latent_dim", True, 1, 65_536, False, False),
    ("vae", "latent_dim", True, 1, 65_536, False, False),
    ("rank-ordered-ae", "latent_dim", True, 1, 65_536, False, False),
    ("contractive-ae", "weight", False, 0.0, 1e6, False, False),
    ("sparse-ae", "weight", False, 0.0, 1e6, False, False),
    ("sparse-ae", "target_rate", False, 0.0, 1.0, True, True),
    ("vae", "beta", False, 0.0, 1e4, False, False),
    ("vae", "decoder_sigma", False, MIN_DECODER_SIGMA, 10.0, False, False),
    ("hyper-semi", "n_classes", True, 2, 100_000, False, False),
    ("hyper-semi", "dropout", False, 0.0, 1.0, False, True),
    ("hyper-semi", "vat_eps", False, 0.0, 1e3, True, False),
    ("hyper-ae", "embedding_dim", True, 0, 4096, False, False),
    ("rank-ordered-ae", "init_scale", False, 0.0, 100.0, True, False),
    ("unet", "base_channels", True, 1, 1024, False, False),
]
TRAIN_FIELDS = [
    ("epochs", True, 1, MAX_EPOCHS, False, False),
    ("batch_size", True, 1, MAX_BATCH, False, False),
    ("lr", False, 0.0, 10.0, True, False),
    ("weight_decay", False, 0.0, 1.0, False, False),
    ("seed", True, 0, 2**63 - 1, False, False),
    ("labels", True, 1, 10**9, False, False),
    ("stage_epochs", True, 0, MAX_EPOCHS, False, False),
    ("grad_clip", False, 0.0, None, True, False),
    ("log_every", True, 1, 10**6, False, False),
    ("labelled_per_batch", True, 0, MAX_BATCH, False, False),
]


def outside(integer, lo, hi, lo_open, hi_open):
    if integer:
        below = st.integers(max_value=lo - 1, min_value=lo - 10**12)
        return below if hi is None else below | st.integers(min_value=hi + 1, max_value=hi + 10**12)
    below = st.floats(max_value=lo, exclude_max=not lo_open, allow_nan=False, allow_infinity=False)
    if hi is None:
        return below
    return below | st.floats(min_value=hi, exclude_min=not hi_open, allow_nan=False, allow_infinity=False)


def inside(integer, lo, hi, lo_open, hi_open):
    if integer:
        return st.integers(lo, hi)
    return st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False, allow_infinity=False)


def ill_typed(integer):
    wrong = st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2) | st.just({"x": 1})
    if integer:
        return wrong | st.floats()                          # 3.0 is not an integer either
    return wrong | st.sampled_from([math.nan, math.inf, -math.inf])


def test_the_tables_cover_every_model_with_a_code_size():
    """The latent_dim rows stand for all models: the field and its range are ModelConfig's."""
    for name in list_models():
        config = make_config(name)
        if hasattr(config, "latent_dim"):
            with pytest.raises(ConfigError, match="latent_dim"):
                make_config(name, latent_dim=0)


@pytest.mark.parametrize("model, field, integer, lo, hi, lo_open, hi_open", MODEL_FIELDS,
                         ids=[f"{m}.{f}" for m, f, *_ in MODEL_FIELDS])
@FEW
@given(data=st.data())
def test_model_config_ranges(data, model, field, integer, lo, hi, lo_open, hi_open):
    bad = data.draw(outside(integer, lo, hi, lo_open, hi_open), label="out of range")
    with pytest.raises(ConfigError) as info:
        make_config(model, **{field: bad})
    assert field in str(info.value)
    wrong = data.draw(ill_typed(integer), label="ill-typed")
    with pytest.raises(ConfigError) as info:
        make_config(model, **{field: wrong})
    assert field in str(info.value)
    good = data.draw(inside(integer, lo, hi, lo_open, hi_open), label="in range")
    assert getattr(make_config(model, **{field: good}), field) == good


@pytest.mark.parametrize("field, integer, lo, hi, lo_open, hi_open", TRAIN_FIELDS,
                         ids=[f for f, *_ in TRAIN_FIELDS])
@FEW
@given(data=st.data())
def test_train_config_ranges(data, field, integer, lo, hi, lo_open, hi_open):
    bad = data.draw(outside(integer, lo, hi, lo_open, hi_open), label="out of range")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({field: bad})
    assert field in str(info.value)
    wrong = data.draw(ill_typed(integer), label="ill-typed")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({field: wrong})
    assert field in str(info.value)
    good = data.draw(inside(integer, lo, hi, lo_open, hi_open), label="in range")
    assert getattr(TrainConfig.from_dict({field: good}), field) == good


@FEW
@given(shape=st.lists(st.integers(-5, 5000), min_size=0, max_size=5))
def test_input_shape_is_refused_or_accepted_by_its_rule(shape):
    """[C, H, W] or [D], every entry in 1..4096, at most 3 x 512 x 512 elements in all."""
    valid = len(shape) in (1, 3) and all(1 <= d <= 4096 for d in shape) and math.prod(shape) <= 3 * 512 * 512
    if valid:
        assert list(make_config("linear-ae", input_shape=shape).input_shape) == shape
    else:
        with pytest.raises(ConfigError, match="input"):
            make_config("linear-ae", input_shape=shape)
