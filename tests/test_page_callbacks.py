"""Widget callbacks never hold a page run's namespace (pages/callbacks.py): Streamlit keeps every widget's
metadata, callback included, for the whole session, so a function defined in a page script pinned that
run's codes, projection and model for as long as the visitor stayed (a class's server grew by hundreds of
MB of dead copies; bench/README.md)."""

from __future__ import annotations

import ast
from functools import partial
from pathlib import Path

from tests.helpers import ok, open_app

ROOT = Path(__file__).resolve().parents[1]
CALLBACK_ARGS = {"on_change", "on_select", "on_click"}
PAGES = sorted(p for p in (ROOT / "pages").glob("*.py") if p.name not in ("common.py", "callbacks.py"))


def _defined_here(tree: ast.Module) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _offenders(source: str) -> list[str]:
    """Callbacks in a page's source that are lambdas or functions the page defines itself (directly or
    as partial's function)."""
    tree = ast.parse(source)
    own, bad = _defined_here(tree), []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        for kw in call.keywords:
            if kw.arg not in CALLBACK_ARGS:
                continue
            value = kw.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "partial" and value.args:
                value = value.args[0]
            if isinstance(value, ast.Lambda) or (isinstance(value, ast.Name) and value.id in own):
                bad.append(f"line {kw.value.lineno}: {kw.arg}={ast.unparse(kw.value)}")
    return bad


def test_the_check_finds_a_page_defined_callback():
    page = ("def _on_select():\n    pass\n"
            "st.plotly_chart(fig, on_select=_on_select)\n"
            "st.button('x', on_click=lambda: None)\n"
            "st.radio('y', on_change=partial(_on_select, 1))\n"
            "st.slider('z', on_change=set_state)\n")
    assert [line.split(":")[0] for line in _offenders(page)] == ["line 3", "line 4", "line 5"]


def test_no_page_passes_a_callback_it_defines():
    bad = {p.name: _offenders(p.read_text(encoding="utf-8")) for p in PAGES}
    assert not {name: lines for name, lines in bad.items() if lines}


def test_latent_map_callbacks_hold_no_page_namespace(tiny_zoo):
    """After a map click (a chart whose key changes with the view), every callback Streamlit keeps for
    the session belongs to an imported module, not to the page script's run (`__main__`). On the tiny zoo,
    as the other page tests: the server-wide caches must not carry the shipped zoo's models into them."""
    at = open_app("latent_map.py", {"model": "mnist/ae-d2"}, timeout=180)
    ok(at)
    chart = next(c for c in at.get("plotly_chart") if "lm_chart" in str(c.proto.id))
    at.session_state[chart.proto.id] = {"selection": {"points": [{"customdata": [3]}], "point_indices": [0]}}
    at.run()
    ok(at)
    metadata = at._session_state._state._new_widget_state.widget_metadata
    callbacks = [m.callback for m in metadata.values() if m.callback is not None]
    assert callbacks                                        # the map's on_select and the thumbnails' on_change
    for callback in callbacks:
        function = callback.func if isinstance(callback, partial) else callback
        namespace = getattr(function, "__globals__", {})
        assert namespace.get("__name__") != "__main__", f"{function!r} holds the page run's namespace"
