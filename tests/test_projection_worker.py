"""The projection process: t-SNE fitted there comes back as a map that places new codes, with its
progress; the child's errors come back as themselves; an idle child exits and a dead one is replaced;
the server never imports umap, numba or pynndescent; a request past its time limit, one the child
cannot read, a close() and the server's death; the UMAP state the page shows. t-SNE only (UMAP
compiles for 30 s and more)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from aecore.errors import ConfigError, DataError
from aecore.lab import latent as lt
from aecore.lab import projection_worker as pw

ROOT = Path(__file__).resolve().parents[1]


def clustered(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(3, d))
    return (centres[np.arange(n) % 3] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def worker():
    w = pw.ProjectionWorker()
    yield w
    w.close()


def test_tsne_round_trip_places_new_codes_and_reports_progress(worker):
    codes = clustered()
    reports = []
    settled = worker.fit(codes=codes, method="tsne", dims=2, seed=0, index=None, tuning=lt.Tuning(perplexity=10),
                         stages=False, progress=lambda f, t: reports.append((f, t)))
    proj = settled.proj
    assert isinstance(settled, lt.Settled) and settled.params == "perplexity 10"
    assert proj.coords.shape == (300, 2) and np.isfinite(proj.coords).all() and proj.method == "tsne"
    assert proj.transform is None and "nearest mapped codes" in proj.placement
    # a code equal to a mapped one lands on its point; a new one among its cluster's points
    np.testing.assert_allclose(proj.place(codes[[4, 7]], codes), proj.coords[[4, 7]], atol=1e-5)
    labels = np.arange(300) % 3
    centres = np.stack([proj.coords[labels == k].mean(0) for k in range(3)])
    new = proj.place(codes[5:6] + 0.01, codes)[0]
    assert np.argmin(np.linalg.norm(centres - new, axis=1)) == labels[5]
    assert reports[0] == (0.0, "t-SNE of 300 codes") and reports[-1] == (1.0, "t-SNE done")
    # stages and a subset cross the process boundary too; the same child answers
    staged = worker.fit(codes=codes, method="tsne", dims=3, seed=1, index=np.arange(0, 300, 3),
                        tuning=lt.Tuning(perplexity=5), stages=True)
    assert [label for label, _ in staged.stages] == [f"{n:,} iterations" for n in lt.TSNE_STAGES]
    assert staged.proj.coords.shape == (100, 3) and staged.proj.index.tolist() == list(range(0, 300, 3))
    assert worker.starts == 1 and worker.state() == "not started"          # t-SNE compiles no UMAP
    assert worker.loaded(["torch", "streamlit", "umap", "numba", "pandas", "pyarrow"]) == []   # the child stays lean
    assert worker.loaded(["sklearn"]) == ["sklearn"]                       # (it fitted with scikit-learn)


def test_child_errors_come_back_as_themselves(worker):
    codes = clustered(60)
    bad = codes.copy()
    bad[7, 2] = np.nan
    with pytest.raises(DataError, match="NaN or infinite") as caught:
        worker.fit(codes=bad, method="tsne", dims=2, seed=0, index=None, tuning=lt.Tuning(perplexity=10),
                   stages=False)
    assert "raised in the projection process" in "\n".join(caught.value.__notes__)
    with pytest.raises(ConfigError, match="2-D or 3-D"):
        worker.fit(codes=codes, method="tsne", dims=4, seed=0, index=None, tuning=lt.Tuning(perplexity=10),
                   stages=False)
    assert worker.fit(codes=codes, method="tsne", dims=2, seed=0, index=None, tuning=lt.Tuning(),
                      stages=False).proj.coords.shape == (60, 2)
    assert worker.starts == 1                                                # errors cost no child


def test_idle_child_exits_and_a_dead_one_is_replaced(monkeypatch):
    monkeypatch.setenv(pw.IDLE_ENV, "0.5")
    w = pw.ProjectionWorker()
    codes = clustered(200)
    try:
        assert w.fit(codes=codes, method="tsne", dims=2, tuning=lt.Tuning(perplexity=10)).proj.coords.shape == (200, 2)
        first = w._process
        deadline = time.monotonic() + 20
        while first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not first.is_alive() and first.exitcode == 0 and not w.alive()   # left by itself, when idle
        assert w.fit(codes=codes, method="tsne", dims=2, tuning=lt.Tuning(perplexity=10)).proj.coords.shape == (200, 2)
        assert w.starts == 2

        def kill(fraction, text):                                             # the child dies mid-fit
            os.kill(w._process.pid, signal.SIGKILL)

        with pytest.raises(pw.ProjectionError, match=r"projection process died \(killed by signal 9\).*t-SNE map"):
            w.fit(codes=clustered(1000), method="tsne", dims=2, tuning=lt.Tuning(perplexity=10), progress=kill)
        assert w.fit(codes=codes, method="tsne", dims=2, tuning=lt.Tuning(perplexity=10)).proj.coords.shape == (200, 2)
        assert w.starts == 3
    finally:
        w.close()


def test_submit_fit_keeps_umap_and_numba_out_of_the_server(tmp_path):
    """A fresh server-like process: PCA here, t-SNE through `submit_fit` in the child. Neither process
    imports umap/numba/pynndescent here, the child no torch or streamlit, and the child does not run
    the parent's main script again (a Streamlit page is the server's __main__)."""
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        import os, sys, json
        open(os.path.join(os.environ["MARKS"], __name__), "w").close()   # '__mp_main__': the child ran this file
        if __name__ == "__main__":
            import numpy as np
            from aecore.lab import latent as lt
            codes = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
            pca = lt.fit_projection(codes, "pca", 2)
            job = lt.submit_fit(("k", "tsne"), codes, "tsne", 2, seed=0, tuning=lt.Tuning(perplexity=10))
            settled = job.future.result(120)
            print(json.dumps(dict(
                server=[m for m in ("umap", "numba", "pynndescent") if m in sys.modules],
                child=lt.projection_worker.WORKER.loaded(["torch", "streamlit", "umap", "numba", "pynndescent"]),
                pca=pca.transform is not None, shape=list(settled.proj.coords.shape),
                placed=settled.proj.place(codes[:1], codes).tolist() == settled.proj.coords[:1].tolist())))
    """))
    env = {**os.environ, "MARKS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == dict(server=[], child=[], pca=True, shape=[200, 2], placed=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["__main__", "server.py"]      # no '__mp_main__'


def test_numba_decorators_default_to_the_disk_cache():
    calls = []

    def jit(*args, **kwargs):
        calls.append(kwargs)
        return args

    cached = pw._caching(jit)
    cached(len)
    cached(parallel=True)
    cached(len, cache=False)
    assert calls == [{"cache": True}, {"parallel": True, "cache": True}, {"cache": False}]


# --- limits, bad requests, stops, the server's death -----------------------------------------------------
def test_a_request_past_its_time_limit_stops_the_child_and_frees_the_queue():
    w = pw.ProjectionWorker(timeout=1.0)
    try:
        assert w.loaded(["sys"]) == ["sys"]                                  # a child, started
        first = w._process
        t0 = time.monotonic()
        with pytest.raises(pw.ProjectionError, match=r"'sleep' request took longer than 1 s.*PROJECTION_TIMEOUT"):
            w._ask("sleep", 30, None)
        assert time.monotonic() - t0 < 10 and not first.is_alive() and not w.alive()
        assert w.loaded(["sys"]) == ["sys"] and w.starts == 2                # the next request: a new child
    finally:
        w.close()
    # the maps' words: a t-SNE map is named as the page names it
    assert pw._what("fit", {"method": "tsne"}) == "t-SNE map" and pw._what("fit", {"method": "umap"}) == "UMAP map"


@pytest.mark.parametrize("raw, idle, timeout", [
    (None, 600.0, 600.0), ("30", 30.0, 30.0), ("inf", None, None), ("1e9", 1e6, 1e6), ("3e6", 1e6, 1e6),
    ("-3", 600.0, 600.0), ("nan", 600.0, 600.0), ("soon", 600.0, 600.0), ("0", 0.05, 1.0)])
def test_idle_and_time_limits_read_from_the_environment(monkeypatch, raw, idle, timeout):
    for env in (pw.IDLE_ENV, pw.TIMEOUT_ENV):
        if raw is None:
            monkeypatch.delenv(env, raising=False)
        else:
            monkeypatch.setenv(env, raw)
    assert pw.idle_seconds() == idle and pw.timeout_seconds() == timeout


def test_a_child_that_never_idles_out_still_serves(monkeypatch):
    monkeypatch.setenv(pw.IDLE_ENV, "inf")                 # conn.poll(inf) overflowed: every request failed
    w = pw.ProjectionWorker()
    try:
        assert w.loaded(["sys", "torch"]) == ["sys"] and w.loaded(["sys"]) == ["sys"] and w.starts == 1
    finally:
        w.close()


class Unreadable:
    """Pickles in the server; unpickling it in the child raises (as a class only the server has would)."""

    def __reduce__(self):
        return (divmod, (1, 0))


def test_a_request_the_child_cannot_read_is_answered_and_the_child_serves_on():
    w = pw.ProjectionWorker()
    try:
        assert w.loaded(["sys"]) == ["sys"]
        with pytest.raises(pw.ProjectionError, match=r"could not read the request \(ZeroDivisionError"):
            w.fit(codes=Unreadable(), method="tsne")
        with pytest.raises(pw.ProjectionError, match="could not read the request"):
            w._exchange(pickle.dumps(42), "bad request", None)                   # no (kind, payload) pair
        with pytest.raises(pw.ProjectionError, match="knows no request 'nope'"):
            w._ask("nope", None, None)
        with pytest.raises(TypeError):                                          # a payload a fit cannot take
            w._ask("fit", {"method": "tsne", "bogus": 1}, None)
        assert w.loaded(["sys"]) == ["sys"] and w.starts == 1                    # the same child, in step
    finally:
        w.close()


def test_fit_in_worker_sends_plain_float32_codes_and_int64_index(monkeypatch):
    import torch

    seen = {}
    monkeypatch.setattr(pw.WORKER, "fit", lambda **kwargs: seen.update(kwargs))
    lt.fit_in_worker(torch.ones(10, 3, dtype=torch.float64), "tsne", index=[1, 2, 3])
    assert type(seen["codes"]) is np.ndarray and seen["codes"].dtype == np.float32
    assert type(seen["index"]) is np.ndarray and seen["index"].dtype == np.int64


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")                                               # a zombie has ended too


def test_the_child_ends_with_its_server_even_mid_request(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        from aecore.lab import projection_worker as pw
        w = pw.ProjectionWorker()
        w.loaded([])
        started = threading.Event()
        threading.Thread(target=lambda: w._ask("sleep", 120, lambda f, t: started.set()), daemon=True).start()
        assert started.wait(30), "the request never started"
        print(w._process.pid, flush=True)
        time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        child = int(server.stdout.readline())
        assert not _gone(child)
        server.send_signal(signal.SIGKILL)                                   # no atexit, no close(): just gone
        server.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        server.kill()
        server.wait(10)


def test_an_explicit_thread_count_wins_over_an_inherited_one(monkeypatch):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "4")
    monkeypatch.setenv(pw.THREADS_ENV, "2")
    pw._limit_threads()
    assert [os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")] == ["2"] * 3
    monkeypatch.delenv(pw.THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MKL_NUM_THREADS")
    pw._limit_threads()                                                      # unset: the environment's, else 1
    assert (os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]) == ("4", "1")
    monkeypatch.setenv(pw.THREADS_ENV, "many")
    pw._limit_threads()                                                      # garbage: as if unset
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_umap_state_says_running_only_once_the_fit_has_its_turn():
    w = pw.ProjectionWorker()
    try:
        assert w.loaded(["sys"]) == ["sys"]
        failed = []

        def fit():
            try:
                w.fit(codes=clustered(60), method="umap", dims=4)            # refused at once, nothing compiled
            except ConfigError as err:
                failed.append(err)

        with w._lock:                                                        # another request holds the child
            thread = threading.Thread(target=fit)
            thread.start()
            time.sleep(0.3)
            assert w.state() == "not started"                                # waiting is no compiling
        thread.join(60)
        assert failed and w.state() == "not started"
    finally:
        w.close()


class FakeConn:
    """The child's answers, scripted: the parent's side of the protocol without a process."""

    def __init__(self, messages):
        self.messages, self.sent = list(messages), []

    def send_bytes(self, blob):
        self.sent.append(blob)

    def poll(self, timeout=0.0):
        return bool(self.messages)

    def recv(self):
        return self.messages.pop(0)

    def close(self):
        pass


class FakeProcess:
    exitcode = None

    def is_alive(self):
        return True

    def join(self, timeout=None):
        pass

    terminate = kill = join


def test_a_umap_fit_that_fails_after_compiling_keeps_the_compiled_state():
    w = pw.ProjectionWorker()
    failure = ("error", *pw._portable(ValueError("a layout that went wrong")))
    w._process, w._conn = FakeProcess(), FakeConn([("progress", 0.5, "UMAP"), ("compiled",), failure])
    with pytest.raises(ValueError, match="went wrong"):
        w.fit(codes=clustered(60), method="umap")
    assert w.state() == "done"                                               # the child has compiled UMAP
    w._conn = FakeConn([failure])                                            # a later failure changes nothing
    with pytest.raises(ValueError):
        w.fit(codes=clustered(60), method="umap")
    assert w.state() == "done"
    w2 = pw.ProjectionWorker()
    w2._process, w2._conn = FakeProcess(), FakeConn([failure])               # failed before its compile was done
    with pytest.raises(ValueError):
        w2.fit(codes=clustered(60), method="umap")
    assert w2.state() == "not started"


def test_a_deliberate_close_is_no_death():
    w = pw.ProjectionWorker()
    sleeping, caught = threading.Event(), []

    def ask():
        try:
            w._ask("sleep", 60, lambda fraction, text: sleeping.set())
        except pw.ProjectionError as err:
            caught.append(str(err))

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        assert sleeping.wait(60)
        w.close()
        thread.join(30)
        assert caught and "was stopped (the server closed it)" in caught[0] and "died" not in caught[0]
    finally:
        w.close()
