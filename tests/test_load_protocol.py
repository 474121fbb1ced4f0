"""bench/load_protocol.py against a live app (tiny zoo, offline): two websocket sessions speaking
Streamlit's protocol make each kind of interaction; every run finishes, without an exception or an
error box, and the server applied each change (the page's query string, which the server writes,
says the new value)."""

from __future__ import annotations

import asyncio
import json
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
def home() -> Path:
    return Path(tempfile.mkdtemp(prefix="aecore-lp-test-"))


@pytest.fixture(scope="module")
def server(tiny_zoo_root, home):
    """The app, its script runs timed in the server (bench/timed_server.py) into home / "runs.jsonl"."""
    env = dict(os.environ, AECORE_OFFLINE="1", AECORE_PRETRAINED=str(tiny_zoo_root), AECORE_UMAP_WARMUP="0")
    log = home / "streamlit.log"
    proc, url = lp.launch_server(env=env, log=log, home=str(home), run_log=home / "runs.jsonl")
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
                problems.append(f"latent: clicked #{s.last_pick}, "
                                f"the page says lm_index={s.query_params().get('lm_index')}")
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


def test_two_sessions_each_interaction(server, home):
    url, pid = server
    import time
    started = time.time()

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
    own = lp.summarize_runs(home / "runs.jsonl", since=started)       # every timed run, timed by the server too
    assert own["runs"] >= summary["all_runs"]["n"] and own["median_ms"] > 0 and own["cpu_s"] > 0, own


# --- without a server: synthetic ForwardMsgs fed to the session's message handler ----------------------------
FRAGMENT = "panel-fragment"


def _new_session(*fragment_ids: str) -> lp.ForwardMsg:
    msg = lp.ForwardMsg()
    msg.new_session.page_script_hash = "train-hash"
    msg.metadata.run.script_run_id = f"run-{random.random()}"
    msg.metadata.run.fragment_ids.extend(fragment_ids)
    return msg


def _auto_rerun(interval: float = 1.0, fragment: str = FRAGMENT) -> lp.ForwardMsg:
    msg = lp.ForwardMsg()
    msg.auto_rerun.interval, msg.auto_rerun.fragment_id = interval, fragment
    return msg


def _finished(status) -> lp.ForwardMsg:
    msg = lp.ForwardMsg()
    msg.script_finished = status
    return msg


def _stop_auto_rerun(*fragment_ids: str) -> lp.ForwardMsg:
    msg = lp.ForwardMsg()
    msg.stop_auto_rerun.fragment_ids.extend(fragment_ids)
    return msg


def _full_run(s: lp.Session, *, polling: bool, interval: float = 1.0) -> None:
    s._handle(_new_session())
    if polling:
        s._handle(_auto_rerun(interval))
    s._handle(_finished(lp.ForwardMsg.FINISHED_SUCCESSFULLY))


def _poll(s: lp.Session, *, ends: bool = False) -> None:
    """One fragment poll; `ends`: the panel sees the finished run and calls st.rerun() (a full-app run)."""
    s.fragment_run, s.run_fragment = True, FRAGMENT              # as Session.rerun sets them when it sends
    s.finish_status = None
    s._handle(_new_session(FRAGMENT))
    if ends:
        s._handle(_finished(lp.ForwardMsg.FINISHED_EARLY_FOR_RERUN))
        _full_run(s, polling=False)
    else:
        s._handle(_finished(lp.ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY))


def test_run_fragment_ids():
    assert lp.run_fragment_ids(_new_session()) == []
    assert lp.run_fragment_ids(_new_session("a", "b")) == ["a", "b"]


def test_full_run_from_a_poll_drops_the_auto_rerun():
    s = lp.Session("http://127.0.0.1:9", "t")
    _full_run(s, polling=True)                      # Start training: the page reruns with the panel polling
    assert s.auto_rerun == (1.0, FRAGMENT)
    _poll(s)                                        # a fragment run keeps the timer (the fragment does not resend it)
    assert s.auto_rerun == (1.0, FRAGMENT) and s.finish_status == "fragment"
    _poll(s, ends=True)                             # the run ended: the panel's st.rerun() makes the poll a full run
    assert s.auto_rerun is None
    assert (s.fragment_run, s.run_fragment) == (False, "")
    assert s.finish_status == "ok"                  # the full run's end is the poll's end
    _full_run(s, polling=True)                      # a full run that asks for polling arms it again
    assert s.auto_rerun == (1.0, FRAGMENT)
    _full_run(s, polling=False)                     # ... and one that does not (a page switch) drops it
    assert s.auto_rerun is None


def test_stop_auto_rerun_only_for_its_fragments():
    s = lp.Session("http://127.0.0.1:9", "t")
    _full_run(s, polling=True)
    s._handle(_stop_auto_rerun("another-fragment"))
    assert s.auto_rerun == (1.0, FRAGMENT)
    s._handle(_stop_auto_rerun(FRAGMENT))
    assert s.auto_rerun is None


class _FakeTeacher(lp.Session):
    """A session without a server: each rerun feeds the ForwardMsgs the app would send. The training run ends at
    the third poll (the panel's st.rerun())."""
    polls_to_end = 3

    async def connect(self) -> None:
        self.training, self.polls = False, 0

    async def close(self) -> None:
        pass

    async def rerun(self, kind, *, page=None, change=None, fragment_id="", auto=True):
        run = lp.Run(kind, seconds=0.001)
        self.current = run
        if page is not None:
            self.page = page
        if fragment_id:
            self.polls += 1
            _poll(self, ends=self.polls >= self.polls_to_end)
            if self.polls >= self.polls_to_end:
                self.training = False
        else:
            _full_run(self, polling=self.training, interval=0.01)
        self.current = None
        self.runs.append(run)
        return run


def test_teacher_stops_polling_and_joins_the_mix(monkeypatch):
    async def start(s, epochs=None):
        s.training = True
        return await s.rerun("start training")

    async def denoise(s, rng):
        return await s.rerun("denoise")

    monkeypatch.setattr(lp, "Session", _FakeTeacher)
    monkeypatch.setattr(lp, "start_training", start)
    monkeypatch.setattr(lp, "ACTIONS", {"denoise": denoise})
    out = asyncio.run(lp.session_loop("http://127.0.0.1:9", 0, every=0.05, duration=1.0, mix={"denoise": 1.0},
                                      teacher_train=True))
    kinds = [r.kind for r in out.runs]
    assert out.connected and out.error is None
    assert kinds.count(lp.POLL) == _FakeTeacher.polls_to_end, kinds          # no polls after the run ended
    assert "denoise" in kinds and kinds.index("denoise") > max(i for i, k in enumerate(kinds) if k == lp.POLL)


def test_summary_rows(capsys):
    runs = [lp.Run("open denoise", 2.0), lp.Run("denoise", 0.5), lp.Run("model", 1.0, error="TimeoutError: x"),
            lp.Run("open latent_map", 3.0), lp.Run("latent", None, error="TimeoutError: no finished run"),
            lp.Run("start training", 0.2), lp.Run(lp.POLL, 0.1), lp.Run(lp.POLL, 0.1)]
    res = lp.summarise([lp.Outcome("s0", connected=True, runs=runs)])
    assert res["interactions"]["n"] == 3 and res["interactions"]["errors"] == 2
    waits = res["user_waits"]
    assert waits["n"] == 6 and waits["errors"] == 2 and waits["unfinished"] == 1      # no polls, the opens in
    assert waits["max_ms"] == 3000.0 and waits["median_ms"] == 1000.0 and waits["p95_ms"] == 3000.0
    assert res["all_runs"]["n"] == 8
    res.update(args={"sessions": 1, "every": 5.0, "mix": "denoise=1", "duration": 10.0, "teacher_train": True,
                     "loop": "mix", "timeout": 60.0},
               url="http://127.0.0.1:9", when="now", cpu=None,
               server_rss_mb={"start": None, "all_open": None, "peak": None, "after_close": None})
    lp.print_summary(res)
    lines = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["interactions (all 4)"][-5:] == ["3", "2", "750.0", "1000.0", "1000.0"]
    assert lines[lp.USER_WAITS][-5:] == ["6", "2", "1000.0", "3000.0", "3000.0"]
    assert lines["every run"][-5:] == ["8", "2", "500.0", "3000.0", "3000.0"]


def test_the_run_log_reader_counts_torn_lines_apart(tmp_path):
    from bench.timed_server import summarize

    log = tmp_path / "runs.jsonl"
    good = [dict(start=100.0 + i, seconds=0.01 * (i + 1), cpu=0.005, fragment=i == 2) for i in range(3)]
    log.write_text("\n".join([json.dumps(r) for r in good] + ['{"start": 104.0, "seco', "[1, 2]", '{"start": "x"}',
                                                             json.dumps(dict(start=200.0, seconds=1, cpu=1,
                                                                             fragment=False))]) + "\n")
    assert summarize(log, since=100.0, until=150.0) == dict(
        runs=3, unreadable=3, fragments=1, median_ms=20.0, mean_ms=20.0, median_cpu_ms=5.0, cpu_s=0.01)
    assert summarize(tmp_path / "absent.jsonl") == dict(runs=0, unreadable=0)
