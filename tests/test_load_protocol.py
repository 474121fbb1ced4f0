"""bench/load_protocol.py against a live app (tiny zoo, offline): two websocket sessions speaking
Streamlit's protocol make each kind of interaction; every run finishes, without an exception or an
error box, and the server applied each change (the page's query string, which the server writes,
says the new value)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load_protocol as lp  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_zoo_root):
    home = tempfile.mkdtemp(prefix="aecore-lp-test-")
    env = dict(os.environ, AECORE_OFFLINE="1", AECORE_PRETRAINED=str(tiny_zoo_root), AECORE_UMAP_WARMUP="0")
    log = Path(home) / "streamlit.log"
    proc, url = lp.launch_server(env=env, log=log, home=home)
    try:
        import time
        lp.wait_healthy(url, time.time() + 90, proc)
    except Exception:
        lp.stop_server(proc)
        pytest.fail("streamlit did not start:\n" + log.read_text()[-3000:])
    yield url, proc.pid
    lp.stop_server(proc)


def test_parse_mix():
    assert lp.parse_mix("denoise=2,model=1") == {"denoise": 2.0, "model": 1.0}
    assert lp.parse_mix("latent") == {"latent": 1.0}
    with pytest.raises(Exception):
        lp.parse_mix("browse=1")


def test_widget_key():
    assert lp.widget_key("$$ID-0123abcd-dn_level_gaussian") == "dn_level_gaussian"
    assert lp.widget_key("$$ID-0123abcd-lm_chart-pca-2d-10000-ab12") == "lm_chart-pca-2d-10000-ab12"
    assert lp.widget_key("$$ID-0123abcd-None") is None


async def _one_session(url: str, index: int) -> tuple[lp.Session, list[str]]:
    """Each kind twice (the model once), checking after each that the server applied the change."""
    rng = random.Random(index)
    s = lp.Session(url, f"s{index}", timeout=60)
    await s.connect()
    problems: list[str] = []
    try:
        assert (await s.open("denoise")).seconds is not None
        for _ in range(2):
            await lp.do_denoise(s, rng)
            sent = s.widget("dn_level_gaussian").value()[0]
            noise = unquote(s.query_params().get("noise", ""))
            if noise != f"gaussian:{sent:g}":
                problems.append(f"denoise: sent {sent}, the page says noise={noise}")
        before = s.query_params().get("model")
        await lp.do_model(s, rng)
        chosen = s.widget("model").value()
        after = unquote(s.query_params().get("model", ""))
        if after == before or not after.endswith("/" + chosen):
            problems.append(f"model: chose {chosen}, the page says model={before} -> {after}")
        for _ in range(2):
            await lp.do_latent(s, rng)
            if s.query_params().get("lm_index") != str(s.last_pick):
                problems.append(f"latent: clicked #{s.last_pick}, the page says lm_index={s.query_params().get('lm_index')}")
            if not any(e.WhichOneof("type") == "markdown" and f"Test image #{s.last_pick} " in e.markdown.body
                       for e in s.elements):
                problems.append(f"latent: no caption for the clicked image #{s.last_pick}")
        for _ in range(2):
            await lp.do_vae(s, rng)
            q = s.query_params()
            mode = s.widget("vl_mode").value().split(" ")[0]            # the option's text: 'lerp (straight)'
            steps = int(s.widget("vl_steps").value()[0])
            if (q.get("vl_mode"), q.get("vl_steps")) != (mode, str(steps)):
                problems.append(f"vae: sent {mode}/{steps}, the page says {q.get('vl_mode')}/{q.get('vl_steps')}")
    finally:
        await s.close()
    return s, problems


def test_two_sessions_each_interaction(server):
    url, pid = server

    async def both():
        return await asyncio.gather(*(_one_session(url, i) for i in range(2)))

    results = asyncio.run(both())
    problems = [p for _, ps in results for p in ps]
    runs = [r for s, _ in results for r in s.runs]
    kinds = {r.kind for r in runs}
    assert {"denoise", "model", "latent", "vae"} <= kinds, kinds
    assert all(r.seconds is not None and r.error is None for r in runs), [(r.kind, r.error) for r in runs if r.error]
    assert not [e for r in runs for e in r.exceptions], [e for r in runs for e in r.exceptions]
    assert not [a for r in runs for a in r.alerts], [a for r in runs for a in r.alerts]
    assert not problems, problems
    summary = lp.summarise([lp.Outcome(s.name, connected=True, runs=s.runs) for s, _ in results])
    assert summary["interactions"]["n"] >= 14 and summary["interactions"]["errors"] == 0
    assert lp.rss_mb(pid) > 0
