"""No link breaks a page: every page opened with fuzzed query strings (Hypothesis), with an unreadable
user model folder, with a tampered model's notes and dataset.

A page's state lives in its URL (pages/common.py `bind`/`sync_url`), and a link is anyone's to write:
whatever it says, the page opens without an exception, without "Something went wrong", and every
number widget holds a value inside its own min/max. The keys each page reads are taken from its
source (bind/sync_url/key= literals), mixed with unknown keys; the values are the usual suspects (nan,
inf, huge digit strings, long strings, unicode, paths, markup). Examples are few and derandomized:
each is a full AppTest run of the page (about a second), and CI must see the same ones every time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from aecore.paths import user_models_dir
from tests.helpers import ROOT, open_app

NOT_PAGES = ("common.py", "callbacks.py", "__init__.py")      # modules the pages import
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py") if p.name not in NOT_PAGES)
EXTRA_KEYS = {                         # keys a page reads that its source does not spell as one literal
    "compare.py": ["models", "cmp_level_gaussian", "cmp_level_masking", "cmp_level_saltpepper"],
    "denoise.py": ["noise"],
    "vae_lab.py": ["vl_a_src", "vl_a_index", "vl_b_src", "vl_b_index"],
}
COMMON_KEYS = ["dataset", "model"]     # the sidebar's
UNKNOWN_KEYS = ["foo", "embed", "embed_options", "__proto__", "", "ключ", "k" * 1000]

DIGITS = "9" * 5000                    # int() refuses more than 4,300 digits; float() makes it inf
LONG = "x" * 10_000
VALUES = [
    "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e999", "-1", "0", "-0", " 7 ", "1", "3", "0.5", "1e3",
    DIGITS, "-" + DIGITS, LONG, "", "é漢字🙂\u202e", "a\x00b", "../../etc/passwd", "user:../x",
    "<script>alert(1)</script>", "[x](http://e.vil)", "**b** _i_ `c` $x$",
    # plausible values, so that examples also reach past the first widgets
    "mnist", "digits", "folder:/etc", "mnist/ae-d8", "mnist/vae-d2", "mnist/sparse-ae-kl", "user:nope",
    "gaussian:0.5", "gaussian:nan", "masking:1e999", "saltpepper:-1", "index", "class", "draw", "true",
    "mnist/nope,user:../x,mnist/ae-d8,mnist/ae-d8," + "a," * 500,
]
OPENERS = {"cmp_noise": "gaussian", "pick": "index", "lm_color": "unit", "mode": "direction"}   # show more widgets
SOMETHING_WRONG = "Something went wrong"
_BIND_LITERAL = re.compile(r'\bbind\(\s*"([A-Za-z_]\w*)"')
_WIDGET_KEY = re.compile(r'\bkey="([A-Za-z_]\w*)"')
_SYNC_CALL = re.compile(r"\bsync_url\(([^)]*)\)")


def page_keys(page: str) -> list[str]:
    """The URL keys `page` reads: its bind(...) literals and sync_url(...) arguments, the sidebar's,
    and the ones listed in EXTRA_KEYS; a page without any (home) gets its widget keys (key=...)."""
    source = (ROOT / "pages" / page).read_text(encoding="utf-8")
    keys = set(_BIND_LITERAL.findall(source)) | set(EXTRA_KEYS.get(page, []))
    for args in _SYNC_CALL.findall(source):
        keys |= set(re.findall(r'"([A-Za-z_]\w*)"', args))
    if "sidebar(" in source:
        keys |= set(COMMON_KEYS)
    return sorted(keys or set(_WIDGET_KEY.findall(source)))


def queries(keys: list[str]):
    """Query dicts: mostly the page's own keys, a few unknown ones, values from VALUES."""
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), st.sampled_from(UNKNOWN_KEYS))
    return st.dictionaries(key, st.sampled_from(VALUES), min_size=1, max_size=12)


def check_page(at, page: str, query: dict | None = None) -> None:
    """No exception, no 'Something went wrong', and every number widget inside its own bounds."""
    where = f"{page} {({k[:20]: v[:40] for k, v in (query or {}).items()})}"
    assert not at.exception, (where, [e.value for e in at.exception])
    assert not [e.value for e in at.error if SOMETHING_WRONG in e.value], where
    for w in at.number_input:
        assert w.value is None or (w.min is None or w.value >= w.min) and (w.max is None or w.value <= w.max), \
            (where, w.key, w.value, w.min, w.max)
    for w in at.slider:
        values = w.value if isinstance(w.value, (list, tuple)) else [w.value]
        for v in values:
            assert w.proto.min <= v <= w.proto.max, (where, w.key, v, w.proto.min, w.proto.max)


def uniform(keys: list[str], value: str) -> dict:
    return {k: value for k in keys}


@pytest.mark.parametrize("page", PAGES)
def test_any_query_string_opens_the_page_cleanly(page, tiny_zoo):
    keys = page_keys(page)
    assert keys, f"no URL keys found in pages/{page}"

    # every key at once with the worst values (also with the choices that show more widgets), then a
    # few of Hypothesis's mixes
    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(query=queries(keys))
    @example(query=uniform(keys, "nan"))
    @example(query={**uniform(keys, "nan"), **{k: v for k, v in OPENERS.items() if k in keys}})
    @example(query={k: v for k, v in zip(keys, ["1e308", "-1", DIGITS, "inf", "-0", LONG] * len(keys))})
    def opens(query: dict) -> None:
        check_page(open_app(page, query, timeout=120), page, query)

    opens()


# --- the values bind() accepts ---------------------------------------------------------------------
def test_int_and_float_casts_refuse_absurd_text():
    from pages.common import to_float, to_int

    assert [to_int(t) for t in (" 7 ", "-0", "1e3", "7.0", "0")] == [7, 0, 1000, 7, 0]
    for text in ("1e999", "nan", "inf", "7.5", "abc", "", DIGITS, "1" * 41, "1e308"):
        with pytest.raises(ValueError):
            to_int(text)
    assert to_float(" 0.25 ") == 0.25
    for text in ("nan", "-inf", "1e999", DIGITS, "x"):
        with pytest.raises(ValueError):
            to_float(text)


def test_nan_and_out_of_range_values_are_clamped_at_the_root(tiny_zoo):
    at = open_app("sparsity.py", {"model": "mnist/sparse-ae-kl", "threshold": "nan"}, timeout=120)
    check_page(at, "sparsity.py")
    assert at.number_input(key="threshold").value == 0.01                  # the model's default
    at = open_app("sparsity.py", {"model": "mnist/sparse-ae-kl", "threshold": "1e308"}, timeout=120)
    assert at.number_input(key="threshold").value == 10.0                  # clamped to the widget's max
    at = open_app("compare.py", {"cmp_noise": "gaussian", "cmp_level_gaussian": "nan", "cmp_n": "-5"}, timeout=120)
    check_page(at, "compare.py")
    assert at.slider(key="cmp_level_gaussian").value == 0.5 and at.slider(key="cmp_n").value == 2


# --- model folders that cannot be read, or say too much ------------------------------------------------
def user_folder(name: str, info: dict | str) -> Path:
    """A user model folder holding only config.json (`info`, or this exact text)."""
    folder = user_models_dir() / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(info if isinstance(info, str) else json.dumps(info), encoding="utf-8")
    return folder


def tampered_model(name: str, **info):
    """A real, loadable user model whose config.json then says what `info` says."""
    from aecore.models import build_model
    from aecore.store import save_model

    model = build_model("ae", {"input_shape": [1, 28, 28], "hidden": [8], "latent_dim": 2})
    folder = save_model(model, user_models_dir() / name, dataset="mnist", classes=[str(i) for i in range(10)])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(info)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_an_unreadable_model_folder_never_breaks_a_page(tiny_zoo):
    user_folder("huge-number", '{"model": "ae", "config": {"latent_dim": 1' + "0" * 5000 + "}}")
    for page in PAGES:
        at = open_app(page, timeout=120)
        check_page(at, page)
        assert not at.error, (page, [e.value for e in at.error])
        if page == "home.py":                                   # no sidebar pickers there
            continue
        notes = [x for x in at.sidebar.expander if "could not be read" in x.label]
        assert len(notes) == 1 and notes[0].label == "1 model folder could not be read", page
        assert any("huge-number" in c.value for c in notes[0].caption), page


def test_notes_from_a_model_folder_are_shown_as_plain_text(tiny_zoo):
    tampered_model("evil", notes="[click](http://e.vil) **bold** <b>x</b> www.e.vil")
    at = open_app("reconstructions.py", {"model": "user:evil"}, timeout=120)
    check_page(at, "reconstructions.py")
    assert at.selectbox(key="model").value == "user:evil"
    caption = next(c.value for c in at.sidebar.caption if "click" in c.value)
    assert "[click](" not in caption and "**bold**" not in caption and "<b>" not in caption
    assert "http://" not in caption and "www." not in caption               # no autolink either
    for text in ("click", "bold", "http", "e.vil"):
        assert text in caption.replace("\\", "").replace("\u200b", "")


def test_plain_escapes_markdown_and_links():
    from pages.common import ZWSP, plain

    out = plain("[a](http://x) *b* _c_ `d` <i> $e$ | # f\n# g\n1. h\n- i www.j.k me@l.m \\")
    assert "[a](" not in out and "http://" not in out and "www." not in out and "me@l" not in out
    for raw in ("*b*", "_c_", "`d`", "<i>", "$e$", "\n# g", "\n1. h", "\n- i"):
        assert raw not in out
    assert out.replace("\\", "").replace(ZWSP, "") == "[a](http://x) *b* _c_ `d` <i> $e$ | # f\n# g\n1. h\n- i " \
                                                      "www.j.k me@l.m "
    assert len(plain("x" * 10_000)) < 2100


def test_a_folder_dataset_outside_the_allowed_roots_is_never_offered(tiny_zoo, monkeypatch):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    tampered_model("etc", dataset="folder:/etc")
    for query in ({}, {"dataset": "folder:/etc"}, {"dataset": "folder:/etc", "model": "user:etc"}):
        at = open_app("reconstructions.py", query, timeout=120)
        check_page(at, "reconstructions.py", query)
        assert "folder:/etc" not in at.selectbox(key="dataset").options
        assert at.selectbox(key="dataset").value == "mnist"
        assert at.selectbox(key="model").value != "user:etc"
