"""The frame every page shares: sidebar pickers, cached loaders, and page state in the URL.

State that a teacher may want to share (dataset, model, noise, seed, ...) lives in
st.session_state under a widget key *and* in the query string: `bind()` seeds a widget's key from
the URL on first run, `sync_url()` writes the current values back after the widgets ran.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas  # noqa: F401  whole, before any page runs: plotly reads sys.modules for it and, while another
               # session's thread was still importing it, got a half-made module ('no attribute Series')
import plotly.graph_objects as go
import streamlit as st

from aecore.data import dataset_info, load_dataset
from aecore.data.base import ImageData
from aecore.data.registry import FOLDER_PREFIX
from aecore.device import pick_device
from aecore.errors import AecoreError, ConfigError
from aecore.lab import catalog
from aecore.lab.serving import (fix_mmap_threshold, freeze_long_lived, keep_triton_out, limit_malloc_arenas,
                                page_out_gpu_libraries, start_memory_trimmer, use_session_threads)
from aecore.lab.stored_codes import stored_codes
from aecore.lab.inputs import FORMATS, MAX_UPLOAD_BYTES, UPLOAD_TYPES, image_from_canvas, image_from_upload
from aecore.paths import check_allowed_folder
from aecore.store import LoadedModel

log = logging.getLogger("aecore.app")

DATASETS = ["mnist", "fashion-mnist", "digits"]   # the ones that work offline on a fresh machine
MAX_DATASET_NAME = 1000                           # longer is no dataset (a folder path included)
MAX_REF = 300                                     # longer is no model reference
MAX_LEFT_OUT_SHOWN = 20                           # folders named in the sidebar's note


def _hand_over_to_app_navigation() -> None:
    """Route a fresh server's first deep link (/denoise) through app.py.

    Because a `pages/` folder exists, Streamlit runs the very first script of a new server in
    multipage-v1 mode: a link to /denoise runs pages/denoise.py bare, with a file list for a sidebar
    and without app.py's layout. app.py's st.navigation switches that mode off, but only once it has
    run; so a page that finds it still on switches it off and reruns the same URL through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def expire_closed_sessions(runtime: Any = None, *, timeout: float = 10.0) -> int:
    """Shut down the sessions of closed tabs whose `disconnectedSessionTTL` has run out; how many.

    Streamlit keeps a closed tab's session for a while in case it reconnects, in a TTL cache that
    drops an expired entry only when it is next written, i.e. when another tab closes: the last tabs
    a class closes stay in memory until someone else leaves (30 after every wave of a 300-tab bench).
    This reaps them where Streamlit would, on the server's event loop, under its storage lock, and
    shuts each session down as Streamlit's `close_session` does. `runtime`: this server's (the
    default). Streamlit internals: where they are not there (AppTest, another Streamlit) it does
    nothing.
    """
    try:
        from streamlit.runtime import Runtime

        runtime = runtime or Runtime.instance()
        manager = runtime._session_mgr
        lock, expire = manager._storage_lock, manager._session_storage._cache.expire
        loop = runtime._get_async_objs().eventloop
    except (ImportError, RuntimeError, AttributeError):
        return 0

    async def reap() -> int:
        with lock:
            removed = expire()
        for _, info in removed:
            info.session.shutdown()
        return len(removed)

    return asyncio.run_coroutine_threadsafe(reap(), loop).result(timeout)


# --- URL state ---------------------------------------------------------------------------------------
MAX_NUMBER_TEXT = 40      # longer than any number a widget here takes: "1" * 5000 is garbage, not a seed
MAX_SAFE_INT = 2**53 - 1  # what a browser's number widget can hold exactly


def to_int(text: Any) -> int:
    """An integer from a URL value: ' 7 ', '-0', '1e3', '7.0' are fine; ValueError for anything else
    (non-integral, not finite, beyond ±MAX_SAFE_INT, or longer than MAX_NUMBER_TEXT characters, which
    int() would also refuse above 4,300 digits)."""
    s = str(text).strip()
    if not s or len(s) > MAX_NUMBER_TEXT:
        raise ValueError(f"not an integer: {s[:MAX_NUMBER_TEXT]!r}")
    try:
        value = int(s)
    except ValueError:
        x = float(s)                                           # '1e3', '7.0'; ValueError for garbage
        if not math.isfinite(x) or x != int(x):
            raise ValueError(f"not an integer: {s!r}") from None
        value = int(x)
    if abs(value) > MAX_SAFE_INT:
        raise ValueError(f"integer out of range: {s!r}")
    return value


def to_float(text: Any) -> float:
    """A finite float from a URL value; ValueError for 'nan', 'inf', '1e999', garbage or very long text."""
    s = str(text).strip()
    if not s or len(s) > MAX_NUMBER_TEXT:
        raise ValueError(f"not a number: {s[:MAX_NUMBER_TEXT]!r}")
    x = float(s)
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {s!r}")
    return x


_SAFE_CASTS = {int: to_int, float: to_float}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


KEPT = "_kept"   # st.session_state[KEPT]: {slot: value}. Plain session state, which a page switch keeps


def kept() -> dict[str, Any]:
    """The values that follow a visitor from page to page. Streamlit drops a widget's value when a page
    without it runs (every sidebar navigation), so each bound value is also kept here, under its slot."""
    return st.session_state.setdefault(KEPT, {})


def bind(key: str, default: Any, cast: Callable[[str], Any] = str, choices: list | None = None, *,
         lo: float | None = None, hi: float | None = None, shared: str | None = None) -> None:
    """Seed st.session_state[key] unless the widget already has a value: from the URL (a link opens
    its exact view), else from the value this visitor last had under the slot `shared` (default: the
    key itself; pages that share a setting, such as the seed, name one slot), else `default`.

    A value the cast refuses, one outside `choices`, or a number that is not finite (nan, inf) falls
    back to `default`; `int`/`float` casts go through to_int/to_float (no huge digit strings). With
    `lo`/`hi` (the widget's min/max) the value is clamped into them, on every run: a value kept from
    an earlier run is clamped too when the bounds have changed (another model, another dataset)."""
    slot = shared or key
    if key not in st.session_state:
        value = default
        raw = st.query_params.get(key)
        if raw is not None:
            try:
                value = _SAFE_CASTS.get(cast, cast)(raw)
            except Exception:  # noqa: BLE001 - a URL may say anything: its value is ignored, nothing more
                value = default
        elif slot in kept():
            value = kept()[slot]
        if choices is not None and value not in choices:
            value = default
        if not _finite(value) or (_is_number(default) and not _is_number(value)) or (
                isinstance(default, bool) and not isinstance(value, bool)):
            value = default
        st.session_state[key] = value
    if lo is not None or hi is not None:
        _clamp(key, default, lo, hi)
    # Written back on every run: after a page switch Streamlit may still hold the value under the key
    # but draw the freshly mounted widget at its default; a value set this run is the one it shows.
    st.session_state[key] = kept()[slot] = st.session_state[key]


def _clamp(key: str, default: Any, lo: float | None, hi: float | None) -> None:
    """Keep a numeric widget's value inside [lo, hi] (and of the default's type)."""
    value = st.session_state[key]
    if not _is_number(value) or not _finite(value):
        value = default
    kind = float if isinstance(default, float) or isinstance(lo, float) or isinstance(hi, float) else int
    if kind is int and isinstance(value, float):
        value = round(value)
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    value = kind(value)
    current = st.session_state[key]
    if type(current) is not kind or current != value:
        st.session_state[key] = value


def sync_url(*keys: str) -> None:
    """Mirror these session-state values into the query string (so the link reopens this view)."""
    for key in keys:
        if key in st.session_state and st.session_state[key] is not None:
            value = st.session_state[key]
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            if st.query_params.get(key) != text:
                st.query_params[key] = text


def as_bool(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


# --- untrusted text ----------------------------------------------------------------------------------
ZWSP = "\u200b"
MAX_PLAIN = 2000
_MD_INLINE = re.compile(r"([\\`*_\[\]<>$~|])")               # emphasis, code, links, HTML, LaTeX, tables
_MD_LINE_START = re.compile(r"^([ \t]*)([#+\-=])", re.MULTILINE)  # headings, lists, setext underlines
_MD_ORDERED = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)    # "1." / "1)" lists
_AUTOLINK = re.compile(r"(?i)(?:https?|ftp|file|mailto|xmpp|javascript|data)(?=:)|www(?=\.)|@")   # anywhere


def plain(text: Any, limit: int = MAX_PLAIN) -> str:
    """`text` (a model's notes, a file path, an error message, anything from a file or a URL) made
    safe to put in Streamlit markdown: shown as the very characters it holds, never as a link, an
    image, emphasis, HTML, LaTeX or a heading. Markdown syntax is backslash-escaped; autolinks
    ('http://', 'www.', e-mail addresses) are broken by a zero-width space. At most `limit` characters
    are kept. Do not put the result inside backticks (escapes are not read in code spans)."""
    s = str(text).replace("\r", "")
    if len(s) > limit:
        s = s[:limit] + "…"
    s = _AUTOLINK.sub(lambda m: m.group(0) + ZWSP, s)
    s = _MD_INLINE.sub(r"\\\1", s)
    s = _MD_LINE_START.sub(r"\1\\\2", s)
    return _MD_ORDERED.sub(r"\1\\\2", s)


def code(text: Any, limit: int = 200) -> str:
    """`text` as inline code: shown literally (a backtick, the one character that could end the span,
    becomes a quote)."""
    s = " ".join(str(text).split())[:limit].replace("`", "'")
    return f"`{s}`" if s else ""


# --- cached loaders ----------------------------------------------------------------------------------
def _fingerprint(ref: str) -> float:
    """Changes when a user's model folder is re-saved, so the cache reloads it."""
    if ref.startswith(catalog.USER_PREFIX):
        from aecore.paths import user_models_dir
        weights = user_models_dir() / ref[len(catalog.USER_PREFIX):] / "model.safetensors"
        return weights.stat().st_mtime if weights.exists() else 0.0
    return 0.0


@st.cache_resource(max_entries=24, show_spinner="Loading the model…")
def _load_model(ref: str, fingerprint: float, device: str) -> LoadedModel:
    return catalog.load(ref, device=device)


def load_model(ref: str) -> LoadedModel:
    return _load_model(ref, _fingerprint(ref), device_name())


def _data_options(dataset: str) -> tuple:
    """A `folder:` dataset loads at the size and colour the chosen model was trained with."""
    if not dataset.startswith("folder:"):
        return ()
    entries = catalog.entries(dataset)
    chosen = [e for e in entries if e.ref == st.session_state.get("model")] or entries
    return tuple(sorted(chosen[0].data_options.items())) if chosen else ()


@st.cache_resource(max_entries=8, show_spinner="Loading images…")
def _split(dataset: str, split: str, options: tuple) -> ImageData:
    """One shared, read-only copy per split: st.cache_data would unpickle a fresh 8 MB copy on every
    rerun, which took a good part of each interaction."""
    return load_dataset(dataset, split, **dict(options))


def check_dataset(dataset: str) -> str:
    """`dataset` when this server may load it for a visitor; ConfigError otherwise. A `folder:PATH`
    must lie inside a folder the operator allows (or the uploads folder): a model trained elsewhere
    must not show every visitor the images of any folder on the server."""
    if not isinstance(dataset, str) or not dataset or len(dataset) > MAX_DATASET_NAME:
        raise ConfigError("not a dataset name")
    if dataset.startswith(FOLDER_PREFIX):
        check_allowed_folder(dataset[len(FOLDER_PREFIX):])
    else:
        dataset_info(dataset)                                  # DataError for an unknown name
    return dataset


def dataset_allowed(dataset: str) -> bool:
    try:
        check_dataset(dataset)
    except AecoreError:
        return False
    return True


def test_data(dataset: str) -> ImageData:
    """The dataset's test split (the bundled one offline) on the CPU."""
    return _split(check_dataset(dataset), "test", _data_options(dataset))


def train_data(dataset: str) -> ImageData:
    return _split(check_dataset(dataset), "train", _data_options(dataset))


def device_name() -> str:
    return str(pick_device())


# --- projector mode: one switch for the whole app ----------------------------------------------------
PROJECTOR_TILE_PX = 140      # an image tile on a projector: readable from the back of a room
SCREEN_TILE_PX = 56
PROJECTOR_FONT_PX = 22       # the page's root font size on a projector (Streamlit sizes text in rem; 16 px)
PROJECTOR_CHART_FONT = 20
PROJECTOR_PER_ROW = 4        # images side by side on a projector: 4 tiles of 140 px and their labels fit 1280 px


def projector_on() -> bool:
    return bool(st.session_state.get("projector", kept().get("projector", False)))


def tile_scale(side: int, *, screen_px: int = SCREEN_TILE_PX) -> int:
    """How many times to repeat each pixel of a `side`-pixel image: tiles of about `screen_px` on a
    screen, at least PROJECTOR_TILE_PX with the projector switch on."""
    if projector_on():
        return max(2, math.ceil(PROJECTOR_TILE_PX / side))
    return max(1, round(screen_px / side))


def columns(spec: int | list[int]) -> list:
    """st.columns(spec), but on a projector more than two become rows of two: a control's label or a
    metric in a quarter of the page is cut short ("informative (12 o…") at the projector's type size."""
    widths = [1] * spec if isinstance(spec, int) else list(spec)
    if not projector_on() or len(widths) <= 2:
        return list(st.columns(widths))
    out: list = []
    for start in range(0, len(widths), 2):
        out.extend(st.columns(2))
    return out[:len(widths)]


def projector_switch() -> None:
    """The sidebar's projector toggle (every page has it; the link says projector=1)."""
    bind("projector", False, as_bool)
    st.toggle("Projector", key="projector", help="Large images and text for the back of the room, on every page")
    sync_url("projector")
    if st.session_state["projector"]:
        st.html(f"<style>html {{ font-size: {PROJECTOR_FONT_PX}px; }} "       # metric values: whole, not "11.8…"
                "[data-testid='stMetricValue'] {{ font-size: 1.75rem; }}</style>")


def _app_layout(fig) -> None:
    """The app's chart layout on a plotly figure: the title and legend on the left, clear of Plotly's
    toolbar (top right)."""
    layout = fig.layout                 # attributes set one by one: update_layout's "margin_t" parsing is slow
    top = layout.margin.t if layout.margin.t is not None else 0
    layout.margin.t = max(top, 70 if layout.title.text else 40)
    layout.title.x, layout.title.xanchor = 0.0, "left"
    if layout.showlegend is not False and layout.legend.orientation is None:
        legend = layout.legend
        legend.orientation, legend.yanchor, legend.y, legend.xanchor, legend.x = "h", "bottom", 1.02, "left", 0.0


def chart_spec(fig) -> dict:
    """`fig` laid out as `chart` lays it out, as plotly's JSON-ready dict: what a page caches once for every
    session (st.cache_resource) and hands to `chart` with each visitor's own traces added."""
    _app_layout(fig)
    return fig.to_dict()


class _Spec(go.Figure):
    """A figure already in plotly's dict form. st.plotly_chart asks a figure only for to_dict(), so a
    rerun showing a cached map skips plotly's validation of its 10,000 points (about 70 ms a click on the
    Latent map, with 30 sessions on one server: bench/README.md)."""

    def __init__(self, spec: dict):
        super().__init__()
        self._spec = spec

    def to_dict(self) -> dict:
        return self._spec


def chart(fig, *, traces: tuple[dict, ...] | list[dict] = (), **kwargs: Any):
    """st.plotly_chart with the app's layout (`_app_layout`), larger text on a projector; `kwargs` go to
    st.plotly_chart. `fig` is a plotly figure, or a `chart_spec` dict with `traces` (plotly trace dicts:
    this visitor's selection, their own image) drawn over it; the dict itself is never changed. A figure
    cached for every session may come here from visitors with and without the projector on: the font is
    set or cleared each time, never left from the last visitor."""
    font = PROJECTOR_CHART_FONT if projector_on() else None
    if isinstance(fig, dict):
        layout = {**fig.get("layout", {})}
        layout["font"] = {**layout.get("font", {}), "size": font} if font else \
            {k: v for k, v in layout.get("font", {}).items() if k != "size"}
        fig = _Spec({**fig, "data": [*fig.get("data", []), *traces], "layout": layout})
    else:
        _app_layout(fig)
        fig.layout.font.size = font
        for trace in traces:
            fig.add_trace(trace)
    config = {"displaylogo": False, **kwargs.pop("config", {})}
    return st.plotly_chart(fig, config=config, **kwargs)


# --- the sidebar --------------------------------------------------------------------------------------
@dataclass
class Selection:
    dataset: str
    entry: catalog.Entry | None
    loaded: LoadedModel | None
    data: ImageData

    @property
    def model(self):
        return self.loaded.model if self.loaded else None

    @property
    def shape(self) -> tuple[int, ...]:
        """The model's input shape."""
        return tuple(self.model.config.input_shape)

    @property
    def version(self) -> str:
        """Changes when the weights do: part of every cache key computed from the model."""
        return self.loaded.info.get("weights_sha256") or self.loaded.info.get("created", "")

    @property
    def slug(self) -> str:
        """The model's ref as a file-name part, for downloads."""
        return self.entry.ref.replace("/", "_").replace(":", "_")


def require_fit(sel: Selection) -> None:
    """Stop the page with a message unless the model takes this dataset's images."""
    shape = tuple(sel.model.config.input_shape)
    if shape != tuple(sel.data.input_shape):
        st.error(f"{plain(sel.entry.label)} takes inputs of shape {list(shape)}, but {plain(sel.dataset)} images "
                 f"are {list(sel.data.input_shape)}: pick a model trained on this dataset.")
        st.stop()


@st.cache_resource(max_entries=8, show_spinner="Encoding the test split…")
def _codes(ref: str, version: str, dataset: str, _model) -> np.ndarray:
    """One shared, read-only array per model: st.cache_data would hand every run its own copy (up to
    10 MB each, kept alive by the page's fragments for as long as the session lives). Behind it the
    disk copy (`stored_codes`): a model this cache let go is read back, not encoded again."""
    return read_only(stored_codes(_model, test_data(dataset), weights_key=version).numpy())


def read_only(array: np.ndarray) -> np.ndarray:
    """`array`, refusing writes from now on: for what a cache shares between sessions."""
    array.setflags(write=False)
    return array


def test_codes(sel: Selection) -> np.ndarray:
    """(N, d) codes of the whole test split (VAEs: posterior means), cached per model version and
    dataset; a model that cannot encode it stops the page with a message."""
    try:
        return _codes(sel.entry.ref, sel.version, sel.dataset, sel.model)
    except AecoreError as err:
        st.error(plain(f"Cannot encode {sel.dataset} with {sel.entry.label}: {err}"))
        st.stop()


def dataset_choices() -> list[str]:
    """The datasets that work offline and have a model, then any other one a listed model was trained
    on (a `folder:` model trained on the Train page, the rank-ordered AE's cifar10-patches) that this
    server may load: a known dataset name, or a `folder:` inside an allowed root (`check_dataset`)."""
    trained_on = {e.dataset for e in catalog.entries()}
    offline = [d for d in DATASETS if d in trained_on] or DATASETS      # `digits` has no model: not offered
    return offline + sorted(d for d in trained_on - set(DATASETS) - {""} if dataset_allowed(d))


def keep_model() -> None:
    """Remember the visitor's own choice of model: every page that offers it opens on it."""
    kept()["model"] = st.session_state.get("model")


def _starting_model(refs: list[str], by_ref: dict, prefer: Callable[[catalog.Entry], bool] | None) -> str:
    """The model a page opens on: the link's, else the one this visitor chose (on any page, or by
    training it), else the page's own best (`prefer`), else the first."""
    raw = st.query_params.get("model")
    if isinstance(raw, str) and len(raw) <= MAX_REF and raw in by_ref:
        kept()["model"] = raw
        return raw
    if kept().get("model") in by_ref:
        return kept()["model"]
    preferred = [r for r in refs if prefer is not None and prefer(by_ref[r])]
    return (preferred or refs)[0]


def showcase(entry: catalog.Entry) -> bool:
    """`prefer` for pages about what a code learns: the model beating PCA by the widest margin."""
    best = catalog.showcase(catalog.entries(entry.dataset))
    return best is not None and best.ref == entry.ref


def sidebar(*, model_filter: Callable[[catalog.Entry], bool] | None = None,
            prefer: Callable[[catalog.Entry], bool] | None = None,
            model_help: str | None = None) -> Selection | None:
    """Dataset and model pickers, the device, and a note on the model. None when nothing fits
    (a message is shown instead). A page starts on the first model `prefer` accepts (the VAE lab on a
    VAE), unless the link or an earlier choice names one."""
    use_session_threads()              # this run's torch work on one thread: sessions run side by side
    choices = dataset_choices()
    bind("dataset", choices[0], choices=choices)
    with st.sidebar:
        dataset = st.selectbox("Dataset", choices, key="dataset",
                               help="Test split shown; the bundled copies (mnist, fashion-mnist, digits) work "
                                    "offline, the others need their files in the data folder")
        options = [e for e in catalog.entries(dataset) if model_filter is None or model_filter(e)]
        by_ref = {e.ref: e for e in options}
        entry = None
        if options:
            refs = list(by_ref)
            current = st.session_state.get("model")
            st.session_state["model"] = current if current in by_ref else _starting_model(refs, by_ref, prefer)
            ref = st.selectbox("Model", refs, key="model", format_func=lambda r: by_ref[r].label, help=model_help,
                               on_change=keep_model)
            entry = by_ref[ref]
            st.caption(f"**{plain(entry.model)}** — {plain(entry.about)}")
        projector_switch()
        st.caption(f"Device: `{device_name()}`")
        left_out_note()
    sync_url("dataset", "model")
    try:
        data = test_data(dataset)
    except AecoreError as err:
        show_error(err)
        return None
    if entry is None:
        st.info(f"No model for {plain(dataset)} fits this page yet. Train one on the **Train** page, "
                "or pick another dataset.")
        return Selection(dataset, None, None, data)
    try:
        loaded = load_model(entry.ref)
    except AecoreError as err:
        st.error(plain(f"Cannot load {entry.label}: {err}"))
        return Selection(dataset, entry, None, data)
    return Selection(dataset, entry, loaded, data)


def model_page(title: str, intro: str, *, fit: bool = False, **sidebar_options: Any) -> Selection:
    """Title, introduction and sidebar (`sidebar`'s options) of a page that shows a loaded model; the
    page stops here, after the sidebar's message, when there is none, and with `fit` also when the
    model does not take the dataset's images (`require_fit`)."""
    st.title(title)
    st.write(intro)
    sel = sidebar(**sidebar_options)
    if sel is None or sel.model is None:
        st.stop()
    if fit:
        require_fit(sel)
    return sel


def select_finished_run(key: str) -> None:
    """Select in the sidebar the model a finished run left under `key` as (dataset, ref). Widget keys
    may only be set before their widgets are drawn: call this before `sidebar()`."""
    pending = st.session_state.pop(key, None)
    if pending and pending[0] in DATASETS:
        st.session_state["dataset"], st.session_state["model"] = pending
        kept()["dataset"], kept()["model"] = pending


def left_out_note() -> None:
    """One short note (in the sidebar) naming the model folders the list leaves out because they
    cannot be read; nothing when there are none."""
    try:
        skipped = catalog.left_out()
    except Exception:  # noqa: BLE001 - the note must never be what breaks the page
        log.warning("cannot list the left-out model folders", exc_info=True)
        return
    if not skipped:
        return
    n = len(skipped)
    with st.expander(f"{n} model folder{'s' if n != 1 else ''} could not be read"):
        for label, reason in skipped[:MAX_LEFT_OUT_SHOWN]:
            st.caption(f"**{plain(label, 200)}**: {plain(reason, 300)}")
        if n > MAX_LEFT_OUT_SHOWN:
            st.caption(f"… and {n - MAX_LEFT_OUT_SHOWN} more (see the server log).")


def show_error(err: BaseException) -> None:
    """A clear message instead of a traceback (details go to the server log); the message is shown
    as plain text (it may quote a file, a path or a URL value)."""
    if isinstance(err, AecoreError):
        st.error(plain(str(err)))
    else:
        log.exception("page failed")
        st.error(plain(f"Something went wrong: {type(err).__name__}: {err}. Your models and data are unchanged; "
                       "try other settings, or report this with the page's link."))


def download_png(image, name: str, *, label: str = "Download PNG", key: str | None = None) -> None:
    """A download button for an image grid (H, W) or (H, W, 3) uint8/float array. The PNG is encoded
    only when clicked: encoding every grid on every rerun cost more than the model's forward pass."""
    from aecore.viz import png_bytes
    st.download_button(label, lambda: png_bytes(image), file_name=name, mime="image/png",
                       key=key or f"png-{name}")


OWN_SOURCES = {"upload": "Upload a file", "draw": "Draw"}


def own_image_section(shape, *, key: str, first: str, draw_hint: str):
    """The "Your own image" section: a source choice (`first` listed first and the default; in the link
    as own=), a hint when drawing, then `own_image`'s result."""
    st.subheader("Your own image")
    sources = [first, *(s for s in OWN_SOURCES if s != first)]
    bind("own", first, choices=sources)
    source = st.radio("Source", sources, key="own", horizontal=True, format_func=OWN_SOURCES.get)
    sync_url("own")
    if source == "draw":
        st.caption(draw_hint)
    return own_image(source, shape, key=key)


def own_image(source: str, shape, *, key: str, size: int = 280, stroke: int = 22):
    """The user's own image, uploaded (`source` 'upload') or drawn on a canvas, as ((1, *shape), note
    on the conversion); None until there is one. A bad file gets a message, never an exception.
    Widget keys: f"{key}_upload", f"{key}_canvas"."""
    try:
        if source == "upload":
            file = st.file_uploader(f"An image ({FORMATS}, …; up to {MAX_UPLOAD_BYTES >> 20} MB)", type=UPLOAD_TYPES,
                                    max_upload_size=MAX_UPLOAD_BYTES >> 20, key=f"{key}_upload")
            return image_from_upload(file.getvalue(), shape) if file is not None else None
        st.write("")                          # room for the canvas's floating toolbar
        try:
            from streamlit_drawable_canvas import st_canvas

            drawing = st_canvas(stroke_width=stroke, stroke_color="#FFFFFF", background_color="#000000",
                                height=size, width=size, drawing_mode="freedraw", return_image_data=True,
                                key=f"{key}_canvas")
        except Exception as err:  # a third-party component: never let it take the page down
            st.info(f"The drawing canvas is not available here ({type(err).__name__}); upload an image instead.")
            return None
        image = drawing.image_data if drawing is not None else None
        if image is not None and image.ndim == 3 and image[..., :3].max() > 0:
            return image_from_canvas(image, shape)
    except AecoreError as err:
        st.error(plain(f"Cannot use this image: {err}"))
    return None


# The server's imports are done: Streamlit's gc.collect(2) after every run no longer scans them.
freeze_long_lived()
# Every script run is a new thread: few malloc arenas, large blocks mapped apart from the heap, and free
# memory handed back (a class's 300 tabs), with closed tabs' sessions let go once their reconnect time has
# run out; and without CUDA no triton (imported with torch._dynamo by the first optimizer step), and the
# pages torch's CUDA libraries were read into at import handed back.
limit_malloc_arenas()
fix_mmap_threshold()
keep_triton_out()
page_out_gpu_libraries()
start_memory_trimmer(reap=expire_closed_sessions)

# Last, so that a session importing this module while another one's import is cut short here still
# finds every name defined. Every page imports this module first.
_hand_over_to_app_navigation()
