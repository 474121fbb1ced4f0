"""Concurrent users without browsers: N websocket sessions speaking Streamlit's own protocol.

Each session connects to `/_stcore/stream` as the browser does (subprotocol "streamlit", same-origin
Origin header), sends BackMsg `rerun_script` with a ClientState (query string, page script hash / page
name, the full widget states), and reads the ForwardMsg stream: `new_session` (page hashes),
`navigation` (the app's pages and their url paths), `page_info_changed` (the page's query string),
`delta`s (every widget element, with its `id`, its key, its label and its current value) and
`script_finished` (a run's end). It then interacts as the browser does: one widget's value changed,
every other widget's current value sent along, and times each interaction from the send to the server's
`script_finished` (the same span bench/load_sessions.py measures in Chromium). Errors: `exception`
elements, error alerts ("Something went wrong" and any other st.error), runs that do not finish within
--timeout, and dropped connections.

Interaction kinds (weights with --mix):
  denoise  Corrupt & denoise: the gaussian noise-level slider (key dn_level_gaussian) to a new value
  model    the sidebar's model selectbox (key model) to another model, on the page the session is on
  latent   Latent map: a click on a point of the map (st.plotly_chart on_select, key lm_chart-<view>):
           the selection JSON the frontend sends, with the point's customdata (its test index)
  vae      VAE lab: interpolation path lerp <-> slerp (vl_mode) or its number of steps (vl_steps)
Opening a page (the session goes to the page of its next interaction) is timed as `open <page>`; a model
switch made only because the page needs another model (a VAE for the VAE lab) counts as `model`.
A session's interactions start --every seconds apart (a random offset per session); one that overran its
slot is followed by the next right after it ends, without a catch-up burst.
--teacher-train: session 0 first opens /train, presses "Start training" (a trigger_value; the page's
default settings) and watches the run: it polls the live panel as the browser does (the fragment's
auto_rerun, `train panel poll`) until the run ends, then joins the mix. Like the browser, it drops the poll
timer when a full-app run starts (the run's new_session lists no fragment: the panel's st.rerun() at the end
of training, a page switch) and polls again only if that full run asks for it (its own auto_rerun).
--loop browser-bench: bench/load_sessions.py's loop instead (same interaction names), for comparing the two.

Summary rows (printed and in --json): one per kind (the interactions, `open <page>`, the teacher's runs);
`interactions (all 4)` (json `interactions`): the mix's four kinds only, without the page opens that precede
about half of them; `what users wait for (interactions + opens)` (json `user_waits`): every run a user sits
through, i.e. every run but the teacher's panel polls (the interactions, the page opens, the teacher's own
clicks); `every run` (json `all_runs`): all of them, polls included.

    .venv/bin/python bench/load_protocol.py --launch --start-after 20 --sessions 30 --every 5 --duration 120 \\
        --mix denoise=1,model=1,latent=1,vae=1 --json bench/_out/load_protocol.json
    .venv/bin/python bench/load_protocol.py --url http://127.0.0.1:8501 --sessions 2 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load_sessions import cpu_seconds, descendants, machine_busy_seconds, rss_bytes  # noqa: E402
from bench.timed_server import print_server_runs, server_command, summarize as summarize_runs  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from streamlit.proto.NumberInput_pb2 import NumberInput  # noqa: E402
from streamlit.proto.WidgetStates_pb2 import WidgetState  # noqa: E402

RUN_TIMEOUT = 60.0
KINDS = ("denoise", "model", "latent", "vae")
POLL = "train panel poll"                      # a fragment's auto_rerun: the browser's timer, nobody waits for it
USER_WAITS = "what users wait for (interactions + opens)"
PAGE_OF = {"denoise": "denoise", "latent": "latent_map", "vae": "vae_lab"}
FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY: "ok", ForwardMsg.FINISHED_WITH_COMPILE_ERROR: "compile error",
            ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY: "fragment"}
ERROR_ALERT = 1                                # Alert.Format.ERROR
WIDGETS = ("slider", "selectbox", "radio", "number_input", "checkbox", "multiselect", "text_input", "text_area",
           "plotly_chart", "button", "color_picker")


# --- one session ------------------------------------------------------------------------------------
def widget_key(element_id: str) -> str | None:
    """The user key inside a widget id ('$$ID-<hash>-<key>'); None for a widget without one."""
    parts = element_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "$$ID" and parts[2] != "None" else None


def run_fragment_ids(msg: ForwardMsg) -> list[str]:
    """The fragments a run reruns, read from its new_session message; empty: a full-app run. Streamlit 1.67
    writes them into the message's metadata.run, older releases into new_session.fragment_ids_this_run."""
    ids: list[str] = []
    run = getattr(msg.metadata, "run", None)
    if run is not None:
        ids.extend(run.fragment_ids)
    ids.extend(getattr(msg.new_session, "fragment_ids_this_run", ()))
    return ids


def _decode_array(value: Any) -> list:
    """A plotly figure's array as a list: plain JSON, or plotly 6's {"dtype", "bdata"} (base64 typed array)."""
    if isinstance(value, dict) and "bdata" in value:
        import numpy as np

        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value.get("dtype", "f8")))
        if value.get("shape"):
            shape = [int(s) for s in str(value["shape"]).split(",")]
            arr = arr.reshape(shape)
        return arr.tolist()
    return list(value) if isinstance(value, (list, tuple)) else []


@dataclass
class Widget:
    id: str
    key: str | None
    type: str                      # the Element oneof: slider, selectbox, ...
    proto: Any                     # that element's proto (options, min, max, spec, ...)
    state: WidgetState | None      # what the frontend holds and sends; None: nothing until the user acts
    fragment: str = ""             # the st.fragment it was drawn in: a change reruns only that fragment

    @property
    def label(self) -> str:
        return getattr(self.proto, "label", "")

    def value(self) -> Any:
        """The current value as the frontend shows it (a slider's list, a selectbox's option text, ...)."""
        if self.state is None:
            return None
        which = self.state.WhichOneof("value")
        v = getattr(self.state, which) if which else None
        return list(v.data) if hasattr(v, "data") else v


def initial_state(wtype: str, proto: Any, previous: WidgetState | None) -> WidgetState | None:
    """The WidgetState the frontend keeps for a widget just drawn: the server's value when it set one
    (`set_value`), else the value the frontend already held (same id), else the widget's default."""
    if previous is not None and not getattr(proto, "set_value", False):
        return previous
    s = WidgetState(id=proto.id)
    has = getattr(proto, "set_value", False)
    if wtype == "slider":
        if proto.options:                                             # select_slider: option texts
            if has and proto.raw_value:
                s.string_array_value.data.extend(proto.raw_value)
            else:
                s.string_array_value.data.extend(proto.options[int(i)] for i in proto.default)
        else:
            s.double_array_value.data.extend(proto.value if has else proto.default)
    elif wtype in ("selectbox", "radio"):
        if has and proto.HasField("raw_value"):
            s.string_value = proto.raw_value
        elif proto.HasField("default") and 0 <= proto.default < len(proto.options):
            s.string_value = proto.options[proto.default]
        else:
            return None
    elif wtype == "number_input":
        if has and proto.HasField("value"):
            v = proto.value
        elif proto.HasField("default"):
            v = proto.default
        else:
            return None
        if proto.data_type == NumberInput.INT:
            s.int_value = int(v)
        else:
            s.double_value = float(v)
    elif wtype == "checkbox":
        s.bool_value = proto.value if has else proto.default
    elif wtype == "multiselect":
        if has:
            s.string_array_value.data.extend(proto.raw_values)
        else:
            s.string_array_value.data.extend(proto.options[int(i)] for i in proto.default)
    elif wtype in ("text_input", "text_area", "color_picker"):
        v = proto.value if has and proto.HasField("value") else (proto.default if proto.HasField("default") else None)
        if v is None:
            return None
        s.string_value = v
    else:                                  # buttons (triggers), a chart's selection: nothing until the user acts
        return None
    return s


@dataclass
class Run:
    """One interaction's outcome."""
    kind: str
    seconds: float | None = None           # None: it did not finish
    error: str | None = None
    exceptions: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


class Session:
    """One browser tab, as seen by the server: a websocket, the widgets of the page it shows, their values."""

    def __init__(self, url: str, name: str = "s0", timeout: float = RUN_TIMEOUT, source: str | None = None):
        parsed = urlparse(url)
        self.http = f"{parsed.scheme}://{parsed.netloc}"
        self.ws_url = ("wss" if parsed.scheme == "https" else "ws") + f"://{parsed.netloc}/_stcore/stream"
        self.name, self.timeout = name, timeout
        self.source = source                         # the client's own address (one visitor per address)
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.pages: dict[str, str] = {}              # url path ('denoise') -> page_script_hash
        self.page_hash, self.main_hash, self.page = "", "", ""
        self.query = ""                              # the page's query string, as the browser's address bar has it
        self.widgets: dict[str, Widget] = {}         # id -> widget, of the last full run
        self.seen: set[str] = set()                  # ids drawn by the run in progress
        self.runs: list[Run] = []
        self.current: Run | None = None
        self.finished = asyncio.Event()
        self.finish_status: str | None = None
        self.auto_rerun: tuple[float, str] | None = None   # (interval, fragment id) the page asks to be polled
        self.closed_reason: str | None = None
        self.messages = 0
        self.elements: list[Any] = []                 # elements of the last run (for checks)
        self.fragment_run = False                     # the run in progress is a fragment's (a poll, a widget in one)
        self.run_fragment = ""                        # ... that fragment's id (both as the server says it runs)
        self.last_pick: int | None = None             # the test index of the last latent-map click

    # -- connection -------------------------------------------------------------------------------------
    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        extra = {"local_addr": (self.source, 0)} if self.source else {}
        self.ws = await connect(self.ws_url, subprotocols=["streamlit"], origin=self.http, max_size=None,
                                open_timeout=self.timeout, ping_interval=None, **extra)
        self.reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _read(self) -> None:
        try:
            async for payload in self.ws:
                if isinstance(payload, str):
                    continue
                self.messages += 1
                self._handle(ForwardMsg.FromString(payload))
        except Exception as err:  # noqa: BLE001 - a dropped connection is a result
            self.closed_reason = f"{type(err).__name__}: {err}"
        else:
            self.closed_reason = self.closed_reason or "connection closed by the server"
        self.finished.set()

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            ns = msg.new_session
            self.page_hash, self.main_hash = ns.page_script_hash, ns.main_script_hash
            for p in ns.app_pages:
                self.pages[p.url_pathname] = p.page_script_hash
            self.seen, self.elements = set(), []
            if not run_fragment_ids(msg):
                # a full-app run, whatever was sent (a fragment's st.rerun() turns a poll into one): the browser
                # drops every fragment's auto-rerun timer; this run's own auto_rerun, if any, arms it again
                self.auto_rerun = None
                self.fragment_run, self.run_fragment = False, ""
        elif kind == "navigation":
            for p in msg.navigation.app_pages:
                self.pages[p.url_pathname] = p.page_script_hash
            if msg.navigation.page_script_hash:
                self.page_hash = msg.navigation.page_script_hash
                self.page = next((u for u, h in self.pages.items() if h == self.page_hash), self.page)
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._element(msg.delta.new_element, msg.delta.fragment_id)
        elif kind == "auto_rerun":
            self.auto_rerun = (msg.auto_rerun.interval, msg.auto_rerun.fragment_id)
        elif kind == "stop_auto_rerun":
            ids = msg.stop_auto_rerun.fragment_ids
            if self.auto_rerun is not None and (not ids or self.auto_rerun[1] in ids):
                self.auto_rerun = None
        elif kind == "page_not_found":
            if self.current is not None:
                self.current.alerts.append(f"page not found: {msg.page_not_found.page_name}")
        elif kind == "script_finished":
            status = msg.script_finished
            if status == ForwardMsg.FINISHED_SUCCESSFULLY:
                # the frontend drops the widgets this run did not draw
                self.widgets = {i: w for i, w in self.widgets.items() if i in self.seen}
            elif status == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY and self.fragment_run:
                # ... a fragment's run: those of that fragment only (a chart whose figure changed has a new id)
                self.widgets = {i: w for i, w in self.widgets.items()
                                if i in self.seen or w.fragment != self.run_fragment}
            if status in FINISHED and (status != ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY or self.fragment_run):
                self.finish_status = FINISHED[status]
                self.finished.set()

    def _element(self, element, fragment: str = "") -> None:
        which = element.WhichOneof("type")
        self.elements.append(element)
        run = self.current
        if which == "exception" and run is not None:
            run.exceptions.append(f"{element.exception.type}: {element.exception.message[:160]}")
        elif which == "alert" and element.alert.format == ERROR_ALERT and run is not None:
            run.alerts.append(element.alert.body[:160])
        elif which in WIDGETS:
            proto = getattr(element, which)
            if which == "plotly_chart" and not proto.selection_mode:
                return                                                       # a chart, not a widget
            wid = proto.id
            if not wid:
                return
            old = self.widgets.get(wid)
            self.widgets[wid] = Widget(wid, widget_key(wid), which, proto,
                                       initial_state(which, proto, old.state if old else None), fragment)
            self.seen.add(wid)

    # -- what the page shows -------------------------------------------------------------------------
    def widget(self, key: str, *, prefix: bool = False) -> Widget | None:
        for w in self.widgets.values():
            if w.key == key or (prefix and w.key is not None and w.key.startswith(key)):
                return w
        return None

    def query_params(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.query).items()}

    # -- sending -------------------------------------------------------------------------------------
    def _states(self, change: WidgetState | None) -> list[WidgetState]:
        out = [w.state for w in self.widgets.values() if w.state is not None and (change is None or w.id != change.id)]
        return out + ([change] if change is not None else [])

    async def rerun(self, kind: str, *, page: str | None = None, change: WidgetState | None = None,
                    fragment_id: str = "", auto: bool = True) -> Run:
        """Send one rerun_script and wait for the run's end; the time from the send to script_finished.
        `fragment_id`: rerun only that fragment, as the browser does for a widget drawn in one (`auto`: the
        fragment's own timer asked, as a live panel's poll)."""
        run = Run(kind)
        self.current = run
        msg = BackMsg()
        cs = msg.rerun_script
        if page is not None:                                  # a page switch: a new page, its own query string
            cs.query_string = ""
            cs.page_script_hash = self.pages.get(page, "")
            cs.page_name = page
            self.page, self.query = page, ""
            states = self._states(None)                       # the browser sends what it holds
        else:
            cs.query_string = self.query
            cs.page_script_hash = self.page_hash
            states = self._states(change)
        cs.widget_states.widgets.extend(states)
        self.fragment_run, self.run_fragment = bool(fragment_id), fragment_id
        if fragment_id:
            cs.fragment_id, cs.is_auto_rerun = fragment_id, auto
        self.finished.clear()
        self.finish_status = None
        t0 = time.perf_counter()
        try:
            if self.closed_reason:
                raise ConnectionError(self.closed_reason)
            await self.ws.send(msg.SerializeToString())
            if change is not None and change.id in self.widgets:          # the frontend now holds the new value
                self.widgets[change.id].state = change
            while True:
                remaining = self.timeout - (time.perf_counter() - t0)
                if remaining <= 0:
                    raise TimeoutError(f"no finished run within {self.timeout:.0f} s")
                await asyncio.wait_for(self.finished.wait(), timeout=remaining)
                if self.closed_reason:
                    raise ConnectionError(self.closed_reason)
                if self.finish_status is not None:
                    break
                self.finished.clear()
            run.seconds = time.perf_counter() - t0
            if self.finish_status not in ("ok", "fragment"):
                run.error = self.finish_status
        except (TimeoutError, asyncio.TimeoutError) as err:
            run.error = f"TimeoutError: {err or 'no finished run'}"
        except Exception as err:  # noqa: BLE001 - a failure is a result here
            run.error = f"{type(err).__name__}: {str(err)[:160]}"
        if change is not None and change.id in self.widgets and change.WhichOneof("value") == "trigger_value":
            self.widgets[change.id].state = None                              # a trigger is sent once
        self.current = None
        self.runs.append(run)
        return run

    async def open(self, page: str, kind: str | None = None) -> Run:
        return await self.rerun(kind or f"open {page}", page=page)

    async def set_value(self, kind: str, w: Widget, **value: Any) -> Run:
        """Change one widget (value as WidgetState field=value: double_array_value=[0.3], string_value=...)."""
        s = WidgetState(id=w.id)
        for name, v in value.items():
            target = getattr(s, name)
            if hasattr(target, "data"):
                target.data.extend(v)
            else:
                setattr(s, name, v)
        return await self.rerun(kind, change=s, fragment_id=w.fragment, auto=False)


# --- the interactions ---------------------------------------------------------------------------------
class Skip(Exception):
    """The interaction could not be made (no such widget on the page): counted, not timed."""


def _other(options: list[str], current: str | None, rng: random.Random, allowed: Callable[[str], bool] = None) -> str:
    pool = [o for o in options if o != current and (allowed is None or allowed(o))]
    if not pool:
        raise Skip("no other option")
    return rng.choice(pool)


async def switch_model(s: Session, rng: random.Random, allowed: Callable[[str], bool] | None = None,
                       kind: str = "model") -> Run:
    w = s.widget("model")
    if w is None:
        raise Skip(f"no model selectbox on {s.page or 'the page'}")
    if allowed is None and s.page == "vae_lab":
        allowed = lambda label: "vae" in label      # noqa: E731 - keep the VAE lab on a VAE
    if allowed is None and s.page == "denoise":
        allowed = _denoisable
    return await s.set_value(kind, w, string_value=_other(list(w.proto.options), w.value(), rng, allowed))


def _denoisable(label: str) -> bool:
    return label.startswith(("ae-", "dae-", "conv-ae", "unet", "sparse-", "contractive", "stacked", "topk",
                             "linear-ae"))


async def ensure_page(s: Session, page: str) -> None:
    if s.page != page or not s.widgets:
        await s.open(page)


async def do_denoise(s: Session, rng: random.Random) -> Run:
    await ensure_page(s, "denoise")
    w = s.widget("dn_level_gaussian")
    if w is None:                      # a model that cannot denoise, or the noise kind changed: pick a denoiser
        await switch_model(s, rng, lambda label: label.startswith("dae-gaussian"), kind="model")
        w = s.widget("dn_level_gaussian")
        if w is None:
            raise Skip("no gaussian noise slider on /denoise")
    lo, hi, step = w.proto.min, w.proto.max, w.proto.step or 0.05
    now = (w.value() or [lo])[0]
    levels = [round(lo + i * step, 6) for i in range(int(round((hi - lo) / step)) + 1)]
    return await s.set_value("denoise", w, double_array_value=[_other(levels, now, rng)])


def latent_selection(w: Widget, rng: random.Random) -> tuple[str, int]:
    """The JSON the frontend sends for a click on one point of the map, and that point's test index."""
    spec = json.loads(w.proto.spec)
    traces = [(i, t) for i, t in enumerate(spec.get("data", [])) if _decode_array(t.get("customdata"))]
    traces = [(i, t) for i, t in traces if any(_cd(c) >= 0 for c in _decode_array(t["customdata"]))]
    if not traces:
        raise Skip("no points on the map")
    curve, trace = rng.choice(traces)
    custom = _decode_array(trace["customdata"])
    point = rng.choice([j for j, c in enumerate(custom) if _cd(c) >= 0])
    p: dict[str, Any] = {"curve_number": curve, "point_number": point, "point_index": point,
                         "customdata": custom[point]}
    for axis in ("x", "y", "z"):
        values = _decode_array(trace.get(axis))
        if point < len(values):
            p[axis] = values[point]
    if trace.get("legendgroup") is not None:
        p["legendgroup"] = trace["legendgroup"]
    event = {"selection": {"points": [p], "point_indices": [point], "box": [], "lasso": []}}
    return json.dumps(event), _cd(custom[point])


def _cd(c: Any) -> int:
    c = c[0] if isinstance(c, (list, tuple)) and c else c
    try:
        return int(c)
    except (TypeError, ValueError):
        return -1


async def do_latent(s: Session, rng: random.Random) -> Run:
    await ensure_page(s, "latent_map")
    w = s.widget("lm_chart", prefix=True)
    if w is None:
        raise Skip("no selectable map on /latent_map")
    text, index = latent_selection(w, rng)
    s.last_pick = index
    return await s.set_value("latent", w, string_value=text)


async def do_vae(s: Session, rng: random.Random) -> Run:
    await ensure_page(s, "vae_lab")
    if s.widget("vl_mode") is None:                   # the model in the sidebar is no VAE: pick one
        await switch_model(s, rng, lambda label: "vae" in label, kind="model")
    mode, steps = s.widget("vl_mode"), s.widget("vl_steps")
    if mode is None or steps is None:
        raise Skip("no interpolation controls on /vae_lab")
    if rng.random() < 0.5:
        return await s.set_value("vae", mode, string_value=_other(list(mode.proto.options), mode.value(), rng))
    now = int((steps.value() or [10])[0])
    return await s.set_value("vae", steps, double_array_value=[float(_other(
        [str(v) for v in range(int(steps.proto.min), int(steps.proto.max) + 1)], str(now), rng))])


async def do_model(s: Session, rng: random.Random) -> Run:
    if not s.widgets:
        await s.open("denoise")
    return await switch_model(s, rng)


ACTIONS = {"denoise": do_denoise, "model": do_model, "latent": do_latent, "vae": do_vae}


async def start_training(s: Session, epochs: int | None = None) -> Run:
    """The teacher: /train, the epochs slider when `epochs` is given (else the page's default), then the
    Start button (a trigger_value)."""
    await s.open("train")
    ep = s.widget("tr_epochs")
    if epochs is not None and ep is not None and (ep.value() or [0])[0] != epochs:
        await s.set_value("train settings", ep, double_array_value=[float(epochs)])
    start = s.widget("tr_start")
    if start is None:
        raise Skip("no Start training button on /train")
    return await s.set_value("start training", start, trigger_value=True)


async def poll_fragment(s: Session, until: float) -> None:
    """The browser's auto_rerun of a fragment (a training run's live panel): every `interval` seconds, until a
    full-app run drops the timer without arming it again (the panel's st.rerun() once the run has ended)."""
    while s.auto_rerun is not None and time.perf_counter() < until and not s.closed_reason:
        interval, fragment = s.auto_rerun
        await asyncio.sleep(interval)
        if s.auto_rerun is None:
            break
        await s.rerun(POLL, fragment_id=fragment)


# --- many sessions ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    connected: bool = False
    error: str | None = None
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown interaction {name!r} (known: {', '.join(KINDS)})")
        mix[name] = float(weight or 1)
    if not mix or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the mix needs a positive weight")
    return mix


async def session_loop(url: str, index: int, *, every: float, duration: float, mix: dict[str, float],
                       teacher_train: bool = False, timeout: float = RUN_TIMEOUT, train_epochs: int | None = None,
                       all_open: Callable[[], None] | None = None, seed: int = 0,
                       source: str | None = None) -> Outcome:
    out = Outcome(f"s{index}")
    rng = random.Random(seed * 1000 + index)
    s = Session(url, out.name, timeout, source=source)
    kinds, weights = list(mix), list(mix.values())
    try:
        first = rng.choices(kinds, weights)[0]
        try:
            await s.connect()
        except Exception as err:  # noqa: BLE001
            out.error = f"connect: {type(err).__name__}: {err}"
        else:
            run = await s.open(PAGE_OF.get(first, "denoise"))
            out.connected = run.seconds is not None
            if not out.connected:
                out.error = f"first page: {run.error}"
        if all_open is not None:             # every session has tried to open its first page
            all_open()
        if not out.connected:
            return out
        end = time.perf_counter() + duration
        if teacher_train:            # the teacher starts a run and watches its live panel until it ends
            try:
                await start_training(s, train_epochs)
            except Skip as why:
                out.skipped.append(str(why))
            await poll_fragment(s, end)
        nxt = time.perf_counter() + rng.uniform(0, every)        # sessions do not act in lock step
        kind = first
        while True:
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
            if time.perf_counter() >= end or s.closed_reason:
                break
            nxt += every
            try:
                await ACTIONS[kind](s, rng)
            except Skip as why:
                out.skipped.append(f"{kind}: {why}")
            nxt = max(nxt, time.perf_counter())      # a run that overran its slot: the next one right after, no burst
            kind = rng.choices(kinds, weights)[0]
        if s.closed_reason and time.perf_counter() < end:
            out.error = f"connection lost: {s.closed_reason}"
    finally:
        out.runs = s.runs
        await s.close()
    return out


async def browser_bench_loop(url: str, index: int, *, duration: float, timeout: float = RUN_TIMEOUT,
                             all_open: Callable[[], None] | None = None, pace: float = 0.0) -> Outcome:
    """bench/load_sessions.py's loop, without the browser: open /denoise (a page load is a new session), the
    noise slider one step (its ArrowRight / ArrowLeft), the next model in the sidebar, open /latent_map (again
    a new session). Same interaction names as there, for a side-by-side comparison. `pace`: seconds to wait
    after each interaction (what a browser takes to draw one and act again; 0: back to back)."""
    out = Outcome(f"s{index}")
    end, turn, first = time.perf_counter() + duration, index, True
    while time.perf_counter() < end:
        s = Session(url, out.name, timeout)
        try:
            try:
                await s.connect()
            except Exception as err:  # noqa: BLE001
                out.error = out.error or f"connect: {type(err).__name__}: {err}"
                if first:
                    if all_open is not None:
                        all_open()
                    return out
                await asyncio.sleep(1.0)
                continue
            run = await s.open("denoise", kind="open denoise")
            if first:
                out.connected, first = run.seconds is not None, False
                if all_open is not None:
                    all_open()
            await asyncio.sleep(pace)
            slider = s.widget("dn_level_gaussian")
            if slider is not None:
                now = (slider.value() or [0.0])[0]
                step = slider.proto.step if turn % 2 else -slider.proto.step
                new = round(min(max(now + step, slider.proto.min), slider.proto.max), 6)
                await s.set_value("noise slider", slider, double_array_value=[new])
                await asyncio.sleep(pace)
            model = s.widget("model")
            if model is not None:
                options, shown = list(model.proto.options), model.value()
                label = next(m for m in options[turn % len(options):] + options if m != shown)
                await s.set_value("switch model", model, string_value=label)
                await asyncio.sleep(pace)
        finally:
            out.runs.extend(s.runs)
            await s.close()
        s = Session(url, out.name, timeout)
        try:
            await s.connect()
            await s.open("latent_map", kind="open latent map")
            await asyncio.sleep(pace)
        except Exception as err:  # noqa: BLE001
            out.error = out.error or f"connect: {type(err).__name__}: {err}"
        finally:
            out.runs.extend(s.runs)
            await s.close()
        turn += 1
    return out


# --- the server ------------------------------------------------------------------------------------------
def _pids(pid: int | list[int] | None) -> list[int]:
    return [p for p in (pid if isinstance(pid, list) else [pid]) if p]


def rss_mb(pid: int | list[int] | None, *, children: bool = True, field: str = "VmRSS") -> float | None:
    """Resident MB of a process (or of several servers, summed) and (`children`) its descendants (the
    projection process); None without one. field "RssAnon": the anonymous part only."""
    total = sum(rss_bytes(p, children=children, field=field) or 0 for p in _pids(pid))
    return round(total / 2**20, 1) if total else None


def tree_cpu_seconds(pid: int | list[int] | None) -> float | None:
    """CPU seconds a process (or several) and its descendants have used so far."""
    if not _pids(pid):
        return None
    return sum(cpu_seconds(p) or 0.0 for root in _pids(pid) for p in descendants(root))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, deadline: float, proc: subprocess.Popen | None = None) -> None:
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer /_stcore/health in time")


def launch_server(*, port: int | None = None, env: dict | None = None, log: Path | None = None,
                  home: str | None = None, cpus: str | None = None,
                  run_log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`AECORE_OFFLINE=1 streamlit run app.py` on a free port, with its own AECORE_HOME (a teacher's training
    run must not add a model to the user's own folder); `cpus` ("0"): only on those cores (taskset);
    `run_log`: every script run timed in the server, into that file (bench/timed_server.py)."""
    port = port or free_port()
    env = dict(os.environ if env is None else env)
    env.setdefault("AECORE_OFFLINE", "1")
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    env["AECORE_HOME"] = home or env.get("AECORE_HOME") or tempfile.mkdtemp(prefix="aecore-loadp-home-")
    out = open(log, "w") if log else subprocess.DEVNULL
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen([*pin, *server_command(run_log), "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.fileWatcherType", "none", "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the summary -----------------------------------------------------------------------------------------
def p95(ts: list[float]) -> float | None:
    """Nearest rank: the smallest latency that at least 95 % of them do not exceed (as load_sessions.py)."""
    ts = sorted(ts)
    return round(1000 * ts[math.ceil(0.95 * len(ts)) - 1], 1) if ts else None


def stats(runs: list[Run]) -> dict:
    ts = [r.seconds for r in runs if r.seconds is not None]
    errors = [r for r in runs if r.error or r.exceptions or r.alerts]
    return {"n": len(runs), "errors": len(errors), "exceptions": sum(len(r.exceptions) for r in runs),
            "error_alerts": sum(len(r.alerts) for r in runs),
            "unfinished": sum(1 for r in runs if r.seconds is None),
            "median_ms": round(1000 * statistics.median(ts), 1) if ts else None, "p95_ms": p95(ts),
            "max_ms": round(1000 * max(ts), 1) if ts else None}


def summarise(outcomes: list[Outcome]) -> dict:
    runs = [r for o in outcomes for r in o.runs]
    by_kind: dict[str, list[Run]] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r)
    order = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    interactions = [r for r in runs if r.kind in KINDS]
    user_waits = [r for r in runs if r.kind != POLL]          # the interactions, the page opens, the teacher's clicks
    return {"by_kind": {k: stats(by_kind[k]) for k in order}, "interactions": stats(interactions),
            "user_waits": stats(user_waits), "all_runs": stats(runs),
            "samples_ms": {k: [None if r.seconds is None else round(1000 * r.seconds, 1) for r in by_kind[k]]
                           for k in order},
            "failed_to_connect": [f"{o.name}: {o.error}" for o in outcomes if not o.connected],
            "session_errors": [f"{o.name}: {o.error}" for o in outcomes if o.connected and o.error],
            "skipped": [f"{o.name}: {why}" for o in outcomes for why in o.skipped],
            "error_samples": [f"{o.name} {r.kind}: " + "; ".join(filter(None, [r.error, *r.exceptions, *r.alerts]))
                              for o in outcomes for r in o.runs if r.error or r.exceptions or r.alerts][:30]}


def print_summary(res: dict) -> None:
    a = res["args"]
    loop = ("bench/load_sessions.py's loop, back to back" if a.get("loop") == "browser-bench" else
            f"one interaction every {a['every']:g} s each, mix {a['mix']}")
    print(f"load_protocol: {a['sessions']} sessions, {loop}, {a['duration']:g} s"
          f"{', teacher training' if a['teacher_train'] else ''}; {res['url']}; {res['when']}")
    rows = list(res["by_kind"].items()) + [("interactions (all 4)", res["interactions"]),
                                           (USER_WAITS, res["user_waits"]), ("every run", res["all_runs"])]
    width = max([20] + [len(k) + 2 for k, _ in rows])
    print(f"{'kind':<{width}}{'n':>6}{'errors':>8}{'median ms':>11}{'p95 ms':>10}{'max ms':>10}")

    def f(x):
        return "-" if x is None else f"{x:.1f}"
    for k, v in rows:
        if not v["n"]:
            continue
        print(f"{k:<{width}}{v['n']:>6}{v['errors']:>8}{f(v['median_ms']):>11}{f(v['p95_ms']):>10}"
              f"{f(v['max_ms']):>10}")
    i = res["all_runs"]
    print(f"errors in all runs: {i['exceptions']} exception elements, {i['error_alerts']} error alerts, "
          f"{i['unfinished']} runs not finished within {a['timeout']:g} s")
    print(f"sessions: {a['sessions'] - len(res['failed_to_connect'])} connected, "
          f"{len(res['failed_to_connect'])} failed to connect, {len(res['session_errors'])} lost later; "
          f"{len(res['skipped'])} interactions skipped")
    r = res["server_rss_mb"]
    print(f"server RSS (MB, with children): start {r['start']}, all sessions open {r['all_open']}, "
          f"peak {r['peak']}, after close {r['after_close']}; the server process alone: all open "
          f"{r.get('server_only_all_open')}, peak {r.get('server_only_peak')}, after close "
          f"{r.get('server_only_after_close')}; peak of the anonymous part (with children; the rest is "
          f"libraries' pages, read back from their files) {r.get('anonymous_peak')}")
    c = res.get("cpu")
    if c:
        runs = max(1, res["all_runs"]["n"])
        print(f"CPU seconds over the {c['window_s']} s of sessions on {c['cores']} cores: server {c['server_s']} "
              f"({c['server_process_s']} without its projection process, {c['server_process_s'] / runs:.3f} per run), "
              f"this load generator {c['client_s']}, rest of the machine {c['others_s']}, idle {c['idle_s']}")
    print_server_runs(res.get("server_runs"), res["all_runs"]["n"])
    for line in res["failed_to_connect"] + res["session_errors"] + res["error_samples"][:15]:
        print("  error:", line)


async def run_load(url: str, *, sessions: int, every: float, duration: float, mix: dict[str, float],
                   teacher_train: bool = False, timeout: float = RUN_TIMEOUT, server_pid: int | list[int] | None = None,
                   train_epochs: int | None = None, sources: list[str] | None = None,
                   connect_spread: float = 0.0, seed: int = 0, loop: str = "mix", warm: bool = False,
                   pace: float = 0.0) -> dict:
    """Open `sessions` sessions (spread over `connect_spread` s), run them, and summarise. `warm`: one session
    opens the home page first (as load_sessions.py does before it starts timing). `sources`: session i
    connects from sources[i % len(sources)] (one visitor per address, for a proxy that hashes them)."""
    if warm:
        w = Session(url, "warm-up", timeout)
        await w.connect()
        await w.rerun("warm-up", page="")
        await w.close()
    rss = {"start": rss_mb(server_pid), "all_open": None, "peak": rss_mb(server_pid), "after_close": None,
           "server_only_all_open": None, "server_only_peak": rss_mb(server_pid, children=False),
           "server_only_after_close": None, "anonymous_peak": rss_mb(server_pid, field="RssAnon")}
    launched_here = bool(_pids(server_pid)) and set(_pids(server_pid)) <= set(descendants(os.getpid()))
    cpu0 = (tree_cpu_seconds(server_pid), tree_cpu_seconds(os.getpid()), machine_busy_seconds(), time.perf_counter(),
            sum(cpu_seconds(p) or 0.0 for p in _pids(server_pid)))
    window = [time.time(), None]            # Unix times: for the server's own run log (bench/timed_server.py)
    opened = [0]

    def one_open() -> None:
        opened[0] += 1
        if opened[0] == sessions:
            rss["all_open"] = rss_mb(server_pid)
            rss["server_only_all_open"] = rss_mb(server_pid, children=False)

    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            v, alone = rss_mb(server_pid), rss_mb(server_pid, children=False)
            if v:
                rss["peak"] = max(rss["peak"] or 0, v)
                rss["server_only_peak"] = max(rss["server_only_peak"] or 0, alone or 0)
                rss["anonymous_peak"] = max(rss["anonymous_peak"] or 0, rss_mb(server_pid, field="RssAnon") or 0)
    if server_pid:
        threading.Thread(target=sample, daemon=True).start()

    async def delayed(i: int) -> Outcome:
        await asyncio.sleep(connect_spread * i / max(1, sessions))
        if loop == "browser-bench":
            return await browser_bench_loop(url, i, duration=duration, timeout=timeout, all_open=one_open, pace=pace)
        return await session_loop(url, i, every=every, duration=duration, mix=mix,
                                  teacher_train=teacher_train and i == 0, timeout=timeout, all_open=one_open, seed=seed,
                                  train_epochs=train_epochs, source=sources[i % len(sources)] if sources else None)
    outcomes = await asyncio.gather(*(delayed(i) for i in range(sessions)))
    window[1] = time.time()
    stop.set()
    cpu = None
    if server_pid:
        wall = time.perf_counter() - cpu0[3]
        server = tree_cpu_seconds(server_pid) - cpu0[0]
        # a server launched here is a child of ours: not the load generator's CPU
        client = tree_cpu_seconds(os.getpid()) - cpu0[1] - (server if launched_here else 0.0)
        busy = machine_busy_seconds() - cpu0[2]
        alone = sum(cpu_seconds(p) or 0.0 for p in _pids(server_pid)) - cpu0[4]      # without the projection child
        cpu = {"window_s": round(wall, 1), "cores": os.cpu_count(), "server_s": round(server, 1),
               "server_process_s": round(alone, 1),
               "client_s": round(client, 1), "others_s": round(max(busy - server - client, 0.0), 1),
               "idle_s": round(max(wall * (os.cpu_count() or 1) - busy, 0.0), 1)}
    await asyncio.sleep(3.0)                       # the server drops the sessions' state
    rss["after_close"] = rss_mb(server_pid)
    rss["server_only_after_close"] = rss_mb(server_pid, children=False)
    res = summarise(list(outcomes))
    res.update({"server_rss_mb": rss, "cpu": cpu, "window": window})
    return res


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8501", help="a running app server")
    where.add_argument("--launch", action="store_true", help="start a fresh offline server (AECORE_OFFLINE=1) here")
    parser.add_argument("--start-after", type=float, default=20.0,
                        help="with --launch: the sessions start this many seconds after the server was started "
                             "(at the earliest once it answers /_stcore/health)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process, for its RSS and CPU")
    parser.add_argument("--pretrained", help="with --launch: zoo folder instead of the repository's pretrained/")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between one session's interactions")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds each session keeps interacting")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("denoise=1,model=1,latent=1,vae=1"),
                        help="interaction weights, e.g. denoise=2,model=1,latent=1,vae=0")
    parser.add_argument("--teacher-train", action="store_true",
                        help="session 0 starts one training run on /train and watches its panel until it ends")
    parser.add_argument("--train-epochs", type=int,
                        help="with --teacher-train: epochs of the run (default: the page's)")
    parser.add_argument("--connect-spread", type=float, default=0.0,
                        help="open the sessions over this many seconds instead of all at once")
    parser.add_argument("--loop", choices=["mix", "browser-bench"], default="mix",
                        help="browser-bench: bench/load_sessions.py's loop instead (back to back unless --pace; "
                             "no --every/--mix)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="with --loop browser-bench: seconds each session waits after each interaction, as a "
                             "browser takes to draw one and act again (0: back to back)")
    parser.add_argument("--warm", action="store_true",
                        help="open the home page once before the sessions start (load_sessions.py does)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds a run may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--waves", type=int, default=1,
                        help="run the sessions this many times, new sessions each time (300 tabs opened and "
                             "closed: --sessions 30 --waves 10), the server's RSS taken --settle s after each")
    parser.add_argument("--settle", type=float, default=40.0,
                        help="with --waves: seconds after a wave's sessions close before the RSS is read (the "
                             "server frees a closed tab's session after disconnectedSessionTTL, 30 s)")
    parser.add_argument("--servers", type=int, default=1,
                        help="with --launch: this many app servers sharing one AECORE_HOME behind nginx on the "
                             "README's recipe (bench/proxy.py), each session from its own loopback address")
    parser.add_argument("--pin", action="store_true",
                        help="with --launch: the server on core 0, this load generator on the others (a machine "
                             "of the server's own), for comparing with bench/load_sessions.py --pin")
    parser.add_argument("--run-log", type=Path,
                        help="with --launch: the server times each script run itself, into this file "
                             "(bench/timed_server.py); the summary then gives the server's own time per run")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))

    procs, url, log, nginx, sources = [], args.url.rstrip("/"), None, None, None
    if args.launch:
        env = dict(os.environ)
        if args.pretrained:
            env["AECORE_PRETRAINED"] = str(Path(args.pretrained).resolve())
        work = Path(tempfile.mkdtemp(prefix="aecore-loadp-"))
        log = work / "server.log"
        home = tempfile.mkdtemp(prefix="aecore-loadp-home-")          # one AECORE_HOME, shared by the servers
        started = time.time()
        try:
            urls = []
            for i in range(max(1, args.servers)):
                proc, server_url = launch_server(env=env, log=log if i == 0 else work / f"server{i}.log", home=home,
                                                 cpus="0" if args.pin else None,
                                                 run_log=args.run_log if i == 0 else None)
                procs.append(proc)
                urls.append(server_url)
            for proc, server_url in zip(procs, urls):
                wait_healthy(server_url, started + max(120.0, args.start_after), proc)
            url = urls[0]
            if len(procs) > 1:
                from bench.proxy import start_nginx, visitor_addresses

                listen = free_port()
                nginx = start_nginx([int(urlparse(u).port) for u in urls], listen, work)
                url, sources = f"http://127.0.0.1:{listen}", visitor_addresses(args.sessions)
                wait_healthy(url, started + max(120.0, args.start_after), nginx)
            time.sleep(max(0.0, started + args.start_after - time.time()))
        except Exception:
            for proc in procs + ([nginx] if nginx else []):
                stop_server(proc)
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
    pid = [p.pid for p in procs] if procs else args.server_pid
    waves = []
    try:
        for wave in range(max(1, args.waves)):
            res = asyncio.run(run_load(url, sessions=args.sessions, every=args.every, duration=args.duration,
                                       mix=args.mix, teacher_train=args.teacher_train and wave == 0,
                                       timeout=args.timeout, server_pid=pid, connect_spread=args.connect_spread,
                                       seed=args.seed + wave, loop=args.loop, warm=args.warm, pace=args.pace,
                                       train_epochs=args.train_epochs, sources=sources))
            if args.waves > 1:
                time.sleep(args.settle)
                waves.append({"wave": wave + 1, "sessions_so_far": (wave + 1) * args.sessions,
                              "rss_all_open_mb": res["server_rss_mb"]["all_open"],
                              "server_only_all_open_mb": res["server_rss_mb"]["server_only_all_open"],
                              "rss_settled_mb": rss_mb(pid), "server_only_settled_mb": rss_mb(pid, children=False),
                              **res["interactions"]})
                w = waves[-1]
                print(f"wave {wave + 1}: {(wave + 1) * args.sessions} sessions so far; RSS (MB, server alone / with "
                      f"children) with this wave's {args.sessions} open {w['server_only_all_open_mb']} / "
                      f"{w['rss_all_open_mb']}, {args.settle:g} s after they closed {w['server_only_settled_mb']} / "
                      f"{w['rss_settled_mb']}; interactions median {w['median_ms']} ms, p95 {w['p95_ms']} ms, "
                      f"{w['errors']} errors", flush=True)
    finally:
        for proc in ([nginx] if nginx else []) + procs:
            stop_server(proc)
    res = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "url": url, "launched": bool(procs), "servers": len(procs) or None, "server_log": str(log) if log else None,
           "args": {"sessions": args.sessions, "every": args.every, "duration": args.duration,
                    "mix": ",".join(f"{k}={v:g}" for k, v in args.mix.items()), "teacher_train": args.teacher_train,
                    "loop": args.loop, "pace": args.pace, "warm": args.warm, "timeout": args.timeout,
                    "start_after": args.start_after if procs else None, "waves": args.waves, "pin": args.pin},
           **res}
    if waves:
        res["waves"] = waves            # the summary printed below is the last wave's
    if args.run_log and procs:
        res["server_runs"] = summarize_runs(args.run_log, since=res["window"][0], until=res["window"][1])
    print_summary(res)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
