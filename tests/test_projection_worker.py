"""The projection process: t-SNE fitted there comes back as a map that places new codes, with its
progress; the child's errors come back as themselves; an idle child exits and a dead one is replaced;
the server never imports umap, numba or pynndescent. t-SNE only (UMAP compiles for 30 s and more)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
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
    assert worker.loaded(["torch", "streamlit", "umap", "numba"]) == []    # the child stays lean


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

        with pytest.raises(pw.ProjectionError, match=r"projection process died \(killed by signal 9\).*tsne map"):
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
