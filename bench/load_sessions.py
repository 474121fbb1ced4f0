"""Concurrent users: N headless-Chromium sessions against one local app server.

Each session loops for --seconds: open Corrupt & denoise, move the noise slider, switch the model in
the sidebar, open the Latent map. An interaction's latency is the time from the action to the
server's "script finished" message on that session's websocket (parsed from Streamlit's own
protocol; a fragment's run counts too), so it covers the rerun and the transfer, not the browser's
drawing. Each is also timed on the wire, from the action's first `rerun_script` BackMsg leaving the
browser to that "script finished": the span bench/load_protocol.py times, for comparing the two.
Errors: exception elements, the app's "Something went wrong" box, a run that does not finish
within 60 s of the action (the action's own waiting included), or a browser-side failure. The server's
resident memory (with its children) is sampled throughout, and the CPU time used during the sessions
by the server, by the load generator (this script, Playwright's driver, Chromium) and by the rest of
the machine.

The browsers stand in for users' own machines, so Chromium runs at nice 19 (--browser-nice; 0 turns
it off), with CAP_SYS_NICE dropped so it cannot raise its display threads back to nice -8.

Second measurement (--all-models): one process that holds every pretrained model and both bundled
test splits at once, and its resident memory.

    .venv/bin/python bench/load_sessions.py --sessions 8 --seconds 60 --json bench/_out/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timed_server import print_server_runs, server_command, summarize  # noqa: E402

RUN_TIMEOUT = 60.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    out, todo, seen = [], [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


class CpuSplit:
    """CPU seconds used during the sessions by the server (with its children; and its own process alone,
    without the projection process that warms UMAP at start), by the load generator
    (this script, Playwright's driver, every Chromium process) and by everything else on the machine."""

    def __init__(self, server_pid: int):
        self.server_pid, self.last, self.base, self.lock = server_pid, {}, {}, threading.Lock()
        self.start = self.machine = None

    def sample(self) -> None:
        server = set(descendants(self.server_pid))
        now = {}
        for pid in descendants(os.getpid()):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                now[pid] = ("server process" if pid == self.server_pid else
                            "server" if pid in server else "client", cpu)
        with self.lock:
            self.last.update(now)              # a process that ended keeps its last sample

    def begin(self) -> None:
        self.sample()
        with self.lock:
            self.base = {pid: cpu for pid, (_, cpu) in self.last.items()}
        self.start, self.machine = time.perf_counter(), machine_busy_seconds()

    def result(self) -> dict:
        self.sample()
        wall, busy = time.perf_counter() - self.start, machine_busy_seconds() - self.machine
        used = {"server process": 0.0, "server": 0.0, "client": 0.0}
        with self.lock:
            for pid, (who, cpu) in self.last.items():
                used[who] += cpu - self.base.get(pid, 0.0)
        used["server"] += used["server process"]
        return {"window_s": round(wall, 1), "cores": os.cpu_count(), "server_s": round(used["server"], 1),
                "server_process_s": round(used["server process"], 1),      # without the projection process
                "client_s": round(used["client"], 1),
                "others_s": round(max(busy - used["server"] - used["client"], 0.0), 1),
                "idle_s": round(max(wall * (os.cpu_count() or 1) - busy, 0.0), 1)}


def rss_bytes(pid: int, *, children: bool = True, field: str = "VmRSS") -> int:
    """Resident memory of a process and (`children`) its descendants (Linux /proc); field "RssAnon": its
    anonymous part only (what the kernel cannot drop and read back from the libraries' files)."""
    total = 0
    for p in descendants(pid) if children else [pid]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":"))) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Session:
    """One browser tab; counts the server's finished script runs on its websocket."""

    def __init__(self, page, name: str):
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page, self.name = page, name
        self.finished, self.errors, self.latencies = 0, [], {}
        self.wire: dict[str, list[float]] = {}  # per kind: the rerun request leaving the browser -> script_finished
        self.reruns_sent = 0                   # every rerun request, the actions' own and any a page asks for
        self.requests: dict[str, int] = {}     # HTTP requests to the server by kind (static, media, ...)
        self.detail = ""                       # what the current action aims at, for its error line
        self._changed = asyncio.Event()
        self._msg, self._back = ForwardMsg, BackMsg
        self._sent_at: float | None = None     # the current action's first rerun request on the wire
        self._wire_end: float | None = None    # the first finished run after it

        def on_socket(ws):
            ws.on("framereceived", self._on_frame)
            ws.on("framesent", self._on_sent)
        page.on("websocket", on_socket)
        page.on("request", self._on_request)

    def _on_request(self, request) -> None:
        path = urlparse(request.url).path
        kind = next((k for k in ("static", "media", "component", "_stcore") if f"/{k}/" in path), "page")
        self.requests[kind] = self.requests.get(kind, 0) + 1

    @staticmethod
    def _decode(proto, payload):
        """A binary websocket frame as `proto` (BackMsg or ForwardMsg); None for text or undecodable frames."""
        if isinstance(payload, str):
            return None
        try:
            return proto.FromString(payload)
        except Exception:
            return None

    def _on_sent(self, payload) -> None:
        msg = self._decode(self._back, payload)
        if msg is not None and msg.WhichOneof("type") == "rerun_script":
            self.reruns_sent += 1
            if self._sent_at is None:
                self._sent_at = time.perf_counter()

    def _on_frame(self, payload) -> None:
        msg = self._decode(self._msg, payload)
        if msg is None:
            return
        kind = msg.WhichOneof("type")
        if kind == "script_finished" and msg.script_finished in (self._msg.FINISHED_SUCCESSFULLY,
                                                                 self._msg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
            self.finished += 1
            if self._sent_at is not None and self._wire_end is None:
                self._wire_end = time.perf_counter()
            self._changed.set()
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            which = element.WhichOneof("type")
            if which == "exception":
                self.errors.append(f"exception: {element.exception.type}: {element.exception.message[:120]}")
            elif which == "alert" and element.alert.body.startswith("Something went wrong"):
                self.errors.append(f"error box: {element.alert.body[:120]}")

    async def act(self, label: str, action) -> None:
        """Run `action` (a coroutine function) and wait for the next finished script run."""
        before, self.detail = self.finished, ""
        self._sent_at = self._wire_end = None
        t0 = time.perf_counter()
        try:
            await action()
            while self.finished <= before:
                self._changed.clear()
                remaining = RUN_TIMEOUT - (time.perf_counter() - t0)
                if remaining <= 0:
                    raise TimeoutError(f"no finished run within {RUN_TIMEOUT:.0f} s")
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            if time.perf_counter() - t0 > RUN_TIMEOUT:     # the action itself may have used up the time
                raise TimeoutError(f"no finished run within {RUN_TIMEOUT:.0f} s of the action")
        except Exception as err:  # a failure is a result here, not a crash of the bench
            what = f"{label} ({self.name}{', ' + self.detail if self.detail else ''})"
            self.errors.append(f"{what}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            return
        self.latencies.setdefault(label, []).append(time.perf_counter() - t0)
        if self._sent_at is not None and self._wire_end is not None:
            self.wire.setdefault(label, []).append(self._wire_end - self._sent_at)


async def session_loop(browser, url: str, index: int, seconds: float, models: list[tuple[str, str]]) -> Session:
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    context.set_default_timeout(RUN_TIMEOUT * 1000)    # a click may wait as long as a run (Playwright: 30 s)
    page = await context.new_page()
    s = Session(page, f"s{index}")
    main = page.locator('[data-testid="stMain"]')
    end = time.perf_counter() + seconds
    turn = index                                   # sessions start at different models
    while time.perf_counter() < end:
        await s.act("open denoise", lambda: page.goto(f"{url}/denoise", wait_until="commit"))
        slider = main.locator('[data-testid="stSlider"] input[type="range"]').first

        async def move(key=("ArrowRight" if turn % 2 else "ArrowLeft")):
            await slider.focus()
            await slider.press(key)
        await s.act("noise slider", move)

        async def switch(turn=turn):
            # picking the model already shown changes nothing, so no run would ever finish: take the next
            # one (the page keeps its model in the link, `model=<ref>`)
            shown = parse_qs(urlparse(page.url).query).get("model", [None])[0]
            label, ref = next(m for m in models[turn % len(models):] + models if m[1] != shown)
            s.detail = f"{shown} -> {ref}"
            await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
            await page.get_by_role("option", name=label, exact=True).click()
        await s.act("switch model", switch)
        await s.act("open latent map", lambda: page.goto(f"{url}/latent_map", wait_until="commit"))
        turn += 1
    await context.close()
    return s


def all_models_rss() -> dict:
    """Resident memory of one process holding every pretrained model and both bundled test splits."""
    code = (
        "import os, json, torch\n"
        "from aecore.lab import catalog\n"
        "from aecore.data import load_dataset\n"
        "keep = [load_dataset(d, 'test') for d in ('mnist', 'fashion-mnist')]\n"
        "refs = [e.ref for e in catalog.entries()]\n"
        "keep += [catalog.load(r) for r in refs]\n"
        "rss = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:'))) * 1024\n"
        "print(json.dumps({'models': len(refs), 'rss_mb': round(rss / 2**20, 1)}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--pretrained", help="zoo folder to use instead of the repository's pretrained/")
    parser.add_argument("--browser-nice", type=int, default=19,
                        help="run Chromium at this nice level (0: same priority as the server)")
    parser.add_argument("--pin", action="store_true",
                        help="the server on core 0, the browsers and this script on the others: the server's time "
                             "without the browsers' CPU (for comparing with bench/load_protocol.py --pin)")
    parser.add_argument("--run-log", type=Path,
                        help="the server times each script run itself, into this file (bench/timed_server.py)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))     # Playwright and Chromium inherit it
    os.environ.setdefault("AECORE_OFFLINE", "1")
    if args.pretrained:
        os.environ["AECORE_PRETRAINED"] = str(Path(args.pretrained).resolve())
    from aecore.lab import catalog

    models = [(e.label, e.ref) for e in catalog.entries(args.dataset)]
    if not models:
        sys.exit(f"no pretrained models for {args.dataset}: build the zoo or pass --pretrained")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        sys.exit("Debian chromium is not installed (apt-get install chromium)")
    if args.browser_nice:          # the browsers stand in for users' own machines: they yield to the server
        # Chromium raises its display threads to nice -8 when it may (as root it may): setpriv takes that
        # right (CAP_SYS_NICE) away, so every Chromium thread stays at the given level.
        keep = shutil.which("setpriv")
        drop = f"{shlex.quote(keep)} --bounding-set -sys_nice --inh-caps -sys_nice -- " if keep else ""
        wrapper = Path(tempfile.mkdtemp(prefix="aecore-load-")) / "chromium"
        # Playwright starts the browser in a session of its own (setsid), and with the kernel's autogroups
        # (/proc/sys/kernel/sched_autogroup_enabled) CPU is shared between sessions first: nice alone then
        # only ranks Chromium's processes among themselves, and the browsers still took half the machine
        # (2 sessions: server 68 CPU-s, browsers 176 in 125 s). The autogroup's own nice lets them yield.
        group = f"echo {int(args.browser_nice)} > /proc/self/autogroup 2>/dev/null\n"
        run = f'exec {drop}nice -n {int(args.browser_nice)} {shlex.quote(chromium)} "$@"'
        wrapper.write_text(f"#!/bin/sh\n{group}{run}\n")
        wrapper.chmod(0o755)
        chromium = str(wrapper)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    pin = ["taskset", "-c", "0"] if args.pin else []
    server = subprocess.Popen([*pin, *server_command(args.run_log), "run", str(ROOT / "app.py"),
                               "--server.headless", "true", "--server.fileWatcherType", "none",
                               "--server.port", str(port)], cwd=ROOT,
                              env=dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, stop, cpu = [0], threading.Event(), CpuSplit(server.pid)

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_bytes(server.pid))
            cpu.sample()
    threading.Thread(target=sample, daemon=True).start()

    async def run() -> list[Session]:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=FLAGS)
            warm = await browser.new_page()                    # the server is up and has run the app once
            for _ in range(300):
                try:
                    await warm.goto(url, wait_until="domcontentloaded", timeout=2000)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            await warm.locator('[data-testid="stSidebar"]').wait_for(timeout=120_000)
            await warm.close()
            cpu.begin()
            window[0] = time.time()
            sessions = await asyncio.gather(*(session_loop(browser, url, i, args.seconds, models)
                                              for i in range(args.sessions)))
            window[1] = time.time()
            split[0] = cpu.result()
            await browser.close()
            return list(sessions)

    split: list[dict] = [{}]
    window: list[float] = [0.0, 0.0]           # Unix times of the sessions, for the server's own run log
    try:
        sessions = asyncio.run(run())
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=20)

    every = [t for s in sessions for ts in s.latencies.values() for t in ts]
    by_kind: dict[str, list[float]] = {}
    for s in sessions:
        for label, ts in s.latencies.items():
            by_kind.setdefault(label, []).extend(ts)

    wire: dict[str, list[float]] = {}
    for s in sessions:
        for label, ts in s.wire.items():
            wire.setdefault(label, []).extend(ts)

    def p95(ts: list[float]) -> float:
        """Nearest rank: the smallest latency that at least 95 % of them do not exceed."""
        ts = sorted(ts)
        return round(1000 * ts[math.ceil(0.95 * len(ts)) - 1], 1) if ts else float("nan")

    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "sessions": args.sessions, "seconds": args.seconds, "dataset": args.dataset,
        "interactions": len(every), "errors": [e for s in sessions for e in s.errors],
        "p95_ms": p95(every), "median_ms": round(1000 * statistics.median(every), 1) if every else None,
        "by_kind": {k: {"n": len(v), "median_ms": round(1000 * statistics.median(v), 1), "p95_ms": p95(v)}
                    for k, v in by_kind.items()},
        "by_kind_wire": {k: {"n": len(v), "median_ms": round(1000 * statistics.median(v), 1), "p95_ms": p95(v)}
                         for k, v in wire.items()},
        "reruns_sent": sum(s.reruns_sent for s in sessions),
        "requests": {k: sum(s.requests.get(k, 0) for s in sessions) for k in sorted({k for s in sessions
                                                                                     for k in s.requests})},
        "browser_nice": args.browser_nice, "pin": args.pin, "cpu": split[0],
        "server_peak_rss_mb": round(peak[0] / 2**20, 1),
        "all_models": all_models_rss(),
        "server_runs": summarize(args.run_log, since=window[0], until=window[1]) if args.run_log else None,
    }
    print(f"{args.sessions} sessions x {args.seconds:.0f} s: {len(every)} interactions, "
          f"{len(results['errors'])} errors (goal 0), p95 {results['p95_ms']} ms, "
          f"median {results['median_ms']} ms, server peak RSS {results['server_peak_rss_mb']} MB")
    c = results["cpu"]
    print(f"CPU seconds over the {c['window_s']} s of sessions on {c['cores']} cores: server {c['server_s']} "
          f"({c['server_process_s']} without its projection process, "
          f"{c['server_process_s'] / max(1, len(every)):.3f} per interaction), "
          f"browsers + this script {c['client_s']} (Chromium at nice {args.browser_nice}), "
          f"other processes {c['others_s']}, idle {c['idle_s']}")
    for k, v in results["by_kind"].items():
        print(f"  {k:<16} n={v['n']:<4} median {v['median_ms']:>8.1f} ms   p95 {v['p95_ms']:>8.1f} ms")
    print("on the wire (the rerun request sent by the browser -> script_finished, what bench/load_protocol.py times):")
    for k, v in results["by_kind_wire"].items():
        print(f"  {k:<16} n={v['n']:<4} median {v['median_ms']:>8.1f} ms   p95 {v['p95_ms']:>8.1f} ms")
    print(f"the browsers asked for {results['reruns_sent']} script runs for {len(every)} interactions; HTTP "
          f"requests: {results['requests']}")
    print_server_runs(results["server_runs"], len(every))
    for e in results["errors"][:20]:
        print("  error:", e)
    am = results["all_models"]
    print(f"one process holding all {am['models']} pretrained models + both test splits: {am['rss_mb']} MB "
          "(goal <= 1536 MB)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
