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


# --- closed tabs' sessions ---------------------------------------------------------------------------
class _Session:
    def __init__(self, sid: str):
        self.id, self.shut_down = sid, False

    def shutdown(self) -> None:
        self.shut_down = True


class _Runtime:
    """Streamlit's own session manager and storage (what `expire_closed_sessions` reaches into) on an
    event loop of its own: the server's Runtime, without a server."""

    def __init__(self, ttl: float):
        import asyncio
        from types import SimpleNamespace
        from unittest import mock

        from streamlit.runtime.memory_session_storage import MemorySessionStorage
        from streamlit.runtime.websocket_session_manager import WebsocketSessionManager

        self.storage = MemorySessionStorage(ttl_seconds=ttl)
        self._session_mgr = WebsocketSessionManager(self.storage, mock.Mock(), mock.Mock(), None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._async = SimpleNamespace(eventloop=self.loop)

    def _get_async_objs(self):
        return self._async

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_closed_tabs_sessions_are_shut_down_once_their_reconnect_time_is_over():
    import time

    from streamlit.runtime import Runtime
    from streamlit.runtime.session_manager import SessionInfo

    from pages.common import expire_closed_sessions

    import inspect

    # the two internals the stand-in below cannot check: the Runtime's own
    assert callable(Runtime._get_async_objs) and "self._session_mgr =" in inspect.getsource(Runtime.__init__)
    runtime = _Runtime(ttl=2.0)
    try:
        old, new = _Session("old"), _Session("new")
        runtime.storage.save(SessionInfo(client=None, session=old))        # closed at t = 0: expires at 2.0
        assert expire_closed_sessions(runtime) == 0 and not old.shut_down
        time.sleep(1.2)
        runtime.storage.save(SessionInfo(client=None, session=new))        # closed at 1.2: expires at 3.2
        time.sleep(1.2)
        # nothing has written to the storage since `old` expired: Streamlit alone would still hold it
        assert expire_closed_sessions(runtime) == 1
        assert old.shut_down and not new.shut_down
        assert runtime.storage.get("old") is None and runtime.storage.get("new") is not None
    finally:
        runtime.close()


def test_without_a_server_nothing_is_reaped():
    from pages.common import expire_closed_sessions

    assert expire_closed_sessions() == 0                       # no Runtime in a test process (nor in AppTest)
    assert expire_closed_sessions(object()) == 0               # a Streamlit without these internals


def test_the_trimmer_collects_at_once_when_its_hook_let_something_go():
    assert serving.trim_due(lambda: 2, every=30, since_last=10)
    assert not serving.trim_due(lambda: 0, every=30, since_last=10)
    assert serving.trim_due(lambda: 0, every=30, since_last=30)
    assert serving.trim_due(None, every=30, since_last=30) and not serving.trim_due(None, every=30, since_last=1)

    def broken() -> int:
        raise RuntimeError("internals moved")

    assert not serving.trim_due(broken, every=30, since_last=1)   # logged; the trimmer thread goes on
