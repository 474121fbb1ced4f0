"""How the app server shares the CPU: one torch thread per page run, training keeps the default,
long-lived objects frozen out of the garbage collector; the denoise page's model facts are read once
per config file version."""

from __future__ import annotations

import gc
import json
import shutil
import threading

import torch

from aecore.lab import catalog, serving
from aecore.lab import denoise as dn


def _in_thread(fn):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()))
    thread.start()
    thread.join()
    return out["value"]


def test_page_runs_compute_on_one_thread_training_keeps_the_default(monkeypatch):
    monkeypatch.delenv("AECORE_SESSION_THREADS", raising=False)
    x = torch.ones(64, 64)

    def page():
        serving.use_session_threads()
        x @ x
        return torch.get_num_threads()

    def job():
        serving.use_machine_threads()
        x @ x
        return torch.get_num_threads()

    assert _in_thread(page) == 1
    assert _in_thread(job) == serving.MACHINE_THREADS
    monkeypatch.setenv("AECORE_SESSION_THREADS", "3")
    assert serving.session_threads() == 3
    monkeypatch.setenv("AECORE_SESSION_THREADS", "many")
    assert serving.session_threads() == 1


def test_freeze_takes_existing_objects_out_of_collections():
    keep = [[i] for i in range(1000)]
    serving.freeze_long_lived()
    try:
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()


def test_entry_facts_reread_only_a_changed_config(tiny_zoo_root, tmp_path, monkeypatch):
    zoo = tmp_path / "pretrained"
    shutil.copytree(tiny_zoo_root, zoo)               # this test edits a config: not the shared zoo
    monkeypatch.setenv("AECORE_PRETRAINED", str(zoo))
    entries = catalog.entries("mnist")
    first = dn.entry_facts(entries)
    assert first["mnist/dae-gaussian"].noise.kind == "gaussian"
    assert dn.entry_facts(entries) == first
    config = zoo / "mnist" / "dae-gaussian" / "config.json"
    info = json.loads(config.read_text())
    info["recipe"]["noise"] = "masking:0.3"
    config.write_text(json.dumps(info))
    assert dn.entry_facts(entries)["mnist/dae-gaussian"].noise.kind == "masking"


def test_a_class_listing_models_together_reads_the_folders_once(tiny_zoo_root, monkeypatch):
    monkeypatch.setenv("AECORE_PRETRAINED", str(tiny_zoo_root))
    monkeypatch.setattr(catalog, "_cache", {})
    reads, real = [], catalog._read_listing
    started = threading.Barrier(8)

    def counted(*args):
        reads.append(1)
        return real(*args)

    monkeypatch.setattr(catalog, "_read_listing", counted)

    def session():
        started.wait()
        return [e.ref for e in catalog.entries("mnist")]

    results = []
    threads = [threading.Thread(target=lambda: results.append(session())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(r == results[0] and r for r in results)
    assert len(reads) == 1
