"""Concurrent users: N headless-Chromium sessions against one local app server.

Each session loops for --seconds: open Corrupt & denoise, move the noise slider, switch the model in
the sidebar, open the Latent map. An interaction's latency is the time from the action to the
server's "script finished" message on that session's websocket (parsed from Streamlit's own
protocol), so it covers the rerun and the transfer, not the browser's drawing. Errors: exception
elements, the app's "Something went wrong" box, a run that does not finish within 60 s, or a
browser-side failure. The server's resident memory (with its children) is sampled throughout.

Second measurement (--all-models): one process that holds every pretrained model and both bundled
test splits at once, and its resident memory.

    .venv/bin/python bench/load_sessions.py --sessions 8 --seconds 60 --json bench/_out/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_TIMEOUT = 60.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (Linux /proc)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Session:
    """One browser tab; counts the server's finished script runs on its websocket."""

    def __init__(self, page, name: str):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page, self.name = page, name
        self.finished, self.errors, self.latencies = 0, [], {}
        self._changed = asyncio.Event()
        self._msg = ForwardMsg

        def on_socket(ws):
            ws.on("framereceived", self._on_frame)
        page.on("websocket", on_socket)

    def _on_frame(self, payload) -> None:
        if isinstance(payload, str):
            return
        try:
            msg = self._msg.FromString(payload)
        except Exception:
            return
        kind = msg.WhichOneof("type")
        if kind == "script_finished" and msg.script_finished == self._msg.FINISHED_SUCCESSFULLY:
            self.finished += 1
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
        before = self.finished
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
        except Exception as err:  # a failure is a result here, not a crash of the bench
            self.errors.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            return
        self.latencies.setdefault(label, []).append(time.perf_counter() - t0)


async def session_loop(browser, url: str, index: int, seconds: float, models: list[str]) -> Session:
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
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
        model = models[turn % len(models)]

        async def switch(model=model):
            await page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
            await page.get_by_role("option", name=model, exact=True).click()
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
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("AECORE_OFFLINE", "1")
    if args.pretrained:
        os.environ["AECORE_PRETRAINED"] = str(Path(args.pretrained).resolve())
    from aecore.lab import catalog

    models = [e.label for e in catalog.entries(args.dataset)]
    if not models:
        sys.exit(f"no pretrained models for {args.dataset}: build the zoo or pass --pretrained")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        sys.exit("Debian chromium is not installed (apt-get install chromium)")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                               "true", "--server.fileWatcherType", "none", "--server.port", str(port)], cwd=ROOT,
                              env=dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_bytes(server.pid))
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
            sessions = await asyncio.gather(*(session_loop(browser, url, i, args.seconds, models)
                                              for i in range(args.sessions)))
            await browser.close()
            return list(sessions)

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

    def p95(ts: list[float]) -> float:
        ts = sorted(ts)
        return round(1000 * ts[int(0.95 * (len(ts) - 1))], 1) if ts else float("nan")

    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "sessions": args.sessions, "seconds": args.seconds, "dataset": args.dataset,
        "interactions": len(every), "errors": [e for s in sessions for e in s.errors],
        "p95_ms": p95(every), "median_ms": round(1000 * statistics.median(every), 1) if every else None,
        "by_kind": {k: {"n": len(v), "median_ms": round(1000 * statistics.median(v), 1), "p95_ms": p95(v)}
                    for k, v in by_kind.items()},
        "server_peak_rss_mb": round(peak[0] / 2**20, 1),
        "all_models": all_models_rss(),
    }
    print(f"{args.sessions} sessions x {args.seconds:.0f} s: {len(every)} interactions, "
          f"{len(results['errors'])} errors (goal 0), p95 {results['p95_ms']} ms, "
          f"median {results['median_ms']} ms, server peak RSS {results['server_peak_rss_mb']} MB")
    for k, v in results["by_kind"].items():
        print(f"  {k:<16} n={v['n']:<4} median {v['median_ms']:>8.1f} ms   p95 {v['p95_ms']:>8.1f} ms")
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
