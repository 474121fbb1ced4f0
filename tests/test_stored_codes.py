"""Codes kept on disk: the same codes as encoding afresh, read back instead of encoding again, never
reused for other weights, another architecture or other images, rebuilt when damaged, the folder kept
under its budget."""

import os

import pytest
import torch

from aecore.lab import stored_codes as sc
from aecore.models import build_model
from helpers import blobs


def tiny(latent: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": latent})


@pytest.fixture
def encodes(monkeypatch):
    """Counts the encodings of a whole split."""
    calls = []
    real = sc.codes_of

    def counted(model, data, **kwargs):
        calls.append(len(data))
        return real(model, data, **kwargs)

    monkeypatch.setattr(sc, "codes_of", counted)
    return calls


def test_codes_are_read_back_instead_of_encoded_again(encodes):
    model, data = tiny(), blobs(40)
    first = sc.stored_codes(model, data, weights_key="w1")
    again = sc.stored_codes(model, data, weights_key="w1")
    assert encodes == [40]
    assert torch.equal(first, again) and torch.equal(first, sc.codes_of(model, data))
    assert first.shape == (40, 3) and first.dtype == torch.float32


def test_other_weights_architecture_or_images_are_encoded_afresh(encodes):
    data = blobs(40)
    sc.stored_codes(tiny(), data, weights_key="w1")
    sc.stored_codes(tiny(seed=1), data, weights_key="w2")                 # new weights
    sc.stored_codes(tiny(latent=4), data, weights_key="w1")               # same key, another config
    sc.stored_codes(tiny(), blobs(40, seed=5), weights_key="w1")          # same name 'blobs', other images
    sc.stored_codes(tiny(), data, weights_key="")                         # unknown weights: never stored
    sc.stored_codes(tiny(), data, weights_key="")
    assert len(encodes) == 6


def test_a_damaged_or_misshapen_file_is_rebuilt(encodes):
    model, data = tiny(), blobs(40)
    sc.stored_codes(model, data, weights_key="w1")
    (path,) = sc.codes_dir().glob("*.safetensors")
    path.write_bytes(b"\x00garbage")
    assert sc.stored_codes(model, data, weights_key="w1").shape == (40, 3)
    from safetensors.torch import save_file
    save_file({"codes": torch.zeros(7, 3)}, str(path), metadata={"format": "aecore-decoded-v1"})
    assert sc.stored_codes(model, data, weights_key="w1").shape == (40, 3)
    assert len(encodes) == 3
    assert sc.stored_codes(model, data, weights_key="w1").shape == (40, 3) and len(encodes) == 3


def test_the_folder_keeps_to_its_budget_dropping_the_least_recently_used(encodes, monkeypatch):
    data = blobs(256)                                   # 256 x 3 float32 codes: 3 KB a model
    size = 256 * 3 * 4
    monkeypatch.setenv("AECORE_CODES_CACHE_MB", str(2.5 * size / 2**20 + 0.0005))   # room for two files
    models = [tiny(seed=s) for s in range(3)]
    sc.stored_codes(models[0], data, weights_key="a")
    sc.stored_codes(models[1], data, weights_key="b")
    old = sc.codes_dir().glob("*.safetensors")
    for path in old:
        os.utime(path, (1, 1))                          # both long unused ...
    sc.stored_codes(models[0], data, weights_key="a")   # ... then "a" read again: the recent one
    sc.stored_codes(models[2], data, weights_key="c")   # over budget: "b" goes
    assert len(list(sc.codes_dir().glob("*.safetensors"))) == 2
    calls = len(encodes)
    sc.stored_codes(models[0], data, weights_key="a")
    assert len(encodes) == calls                        # kept
    sc.stored_codes(models[1], data, weights_key="b")
    assert len(encodes) == calls + 1                    # dropped, encoded again


def test_a_zero_budget_keeps_nothing_on_disk(encodes, monkeypatch):
    monkeypatch.setenv("AECORE_CODES_CACHE_MB", "0")
    sc.stored_codes(tiny(), blobs(40), weights_key="w1")
    sc.stored_codes(tiny(), blobs(40), weights_key="w1")
    assert len(encodes) == 2 and not sc.codes_dir().exists()


@pytest.mark.parametrize("value, expected_mb", [("0", 0), ("1.5", 1.5), ("inf", 2**30), ("1e400", 2**30),
                                                 ("nan", 512), ("-1", 512), ("lots", 512)])
def test_the_budget_setting_is_read_safely(monkeypatch, value, expected_mb):
    monkeypatch.setenv("AECORE_CODES_CACHE_MB", value)
    assert sc.budget_bytes() == int(expected_mb * 2**20)
