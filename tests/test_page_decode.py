"""The "Decode anywhere" page through AppTest, on the tiny zoo: the plane for a 2-D code and for a PCA slice
(what the browser component is sent), μ, σ and z of the chosen test image, and a model without a decoder."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.lab import decode as dc
from aecore.models import get_model_class
from aecore.models.base import AutoEncoder
from aecore.store import load_pretrained
from tests.helpers import arr, ok, open_app


def page(query: dict | None = None) -> AppTest:
    return open_app("decode.py", query, timeout=120)


def component(at: AppTest) -> tuple[dict, bytes]:
    """The plane component's JSON arguments and the atlas PNG it was sent."""
    (element,) = [e for e in at.main if getattr(e, "type", None) == "component_instance"]
    proto = element.proto
    assert proto.component_name.endswith("decode_plane")
    (png,) = [a.bytes for a in proto.special_args if a.key == "atlas"]
    return json.loads(proto.json_args), png


def posterior(at: AppTest) -> dict[str, np.ndarray]:
    (fig,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars, crosses = fig["data"]
    return {"mu": arr(bars["y"]), "sigma": arr(bars["error_y"]["array"]), "z": arr(crosses["y"])}


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_the_page_starts_on_a_vae_with_a_two_d_code(tiny_zoo):
    at = page()
    ok(at)
    assert at.selectbox(key="model").value == "mnist/vae-d2"


def test_a_two_d_code_is_the_plane_and_the_vae_shows_mu_sigma_and_z(tiny_zoo):
    at = page({"model": "mnist/vae-d2", "dc_index": "3"})
    ok(at)
    args, png = component(at)
    n, (h, w, c) = args["n"], args["tile"]
    assert n == dc.GRID and (h, w, c) == (28, 28, 1) and (args["x_title"], args["y_title"]) == ("z₁", "z₂")
    assert Image.open(io.BytesIO(png)).size == (n * w, n * h)
    assert len(args["dots"]["u"]) == dc.MAX_DOTS and len(args["colours"]) == len(args["classes"]) == 10
    # μ is where the encoder puts test image #3; the plane is the code space itself
    model = load_pretrained("mnist/vae-d2", root=tiny_zoo, device="cpu").model
    x = load_dataset("mnist", "test").as_float(slice(3, 4))
    post = dc.posterior_sample(model, x, seed=0)
    mu_mark, z_mark = args["markers"][:2]
    assert mu_mark["name"] == "μ #3" and z_mark["name"] == "z"
    np.testing.assert_allclose([mu_mark["u"], mu_mark["v"]], post.mu, atol=1e-4)
    np.testing.assert_allclose([z_mark["u"], z_mark["v"]], post.z, atol=1e-4)
    shown = posterior(at)
    np.testing.assert_allclose(shown["mu"], post.mu, rtol=1e-5)
    np.testing.assert_allclose(shown["sigma"], post.sigma, rtol=1e-5)
    np.testing.assert_allclose(shown["z"], post.z, rtol=1e-5)
    assert "the code space itself" in captions(at) and "z decoded (seed 0)" in captions(at)


def test_the_index_slider_moves_mu_and_z_and_the_seed_moves_z_only(tiny_zoo):
    at = page({"model": "mnist/vae-d2"})
    first, first_args = posterior(at), component(at)[0]
    at.slider(key="dc_index").set_value(42).run()
    ok(at)
    second, second_args = posterior(at), component(at)[0]
    assert not np.allclose(first["mu"], second["mu"]) and not np.allclose(first["z"], second["z"])
    assert second_args["markers"][0]["name"] == "μ #42" and second_args["markers"][0] != first_args["markers"][0]
    assert second_args["atlas_key"] == first_args["atlas_key"]        # a 2-D code's plane: the same atlas
    assert at.query_params["dc_index"] in ("42", ["42"])
    at.number_input(key="dc_seed").set_value(7).run()
    ok(at)
    third = posterior(at)
    np.testing.assert_array_equal(third["mu"], second["mu"])
    assert not np.allclose(third["z"], second["z"])


def test_a_larger_code_is_sliced_along_its_principal_directions(tiny_zoo):
    at = page({"model": "mnist/ae-d8", "dc_index": "5"})
    ok(at)
    args, png = component(at)
    assert args["x_title"].startswith("PC 1") and args["y_title"].startswith("PC 2")
    assert [m["name"] for m in args["markers"]] == ["#5"]              # no posterior: the code alone, no z
    assert not at.get("plotly_chart")
    assert "slice of the 8-D code space" in captions(at) and "through the test image's code" in captions(at)
    assert at.number_input(key="dc_seed").disabled
    through_code = args["atlas_key"]
    at.radio(key="dc_centre").set_value("mean").run()
    ok(at)
    args, _ = component(at)
    assert args["atlas_key"] != through_code and "through the codes' mean" in captions(at)
    at.slider(key="dc_index").set_value(6).run()                       # the mean's slice ignores the image
    ok(at)
    assert component(at)[0]["atlas_key"] == args["atlas_key"]


def test_a_model_without_a_decoder_gets_a_message(tiny_zoo, monkeypatch):
    monkeypatch.setattr(get_model_class("unet"), "decode", AutoEncoder.decode)
    at = page({"model": "mnist/unet-denoise"})
    ok(at)
    message = " ".join(i.value for i in at.info)
    assert "cannot be decoded anywhere" in message and "no decoder" in message and "vae-d2" in message
    assert not [e for e in at.main if getattr(e, "type", None) == "component_instance"]
