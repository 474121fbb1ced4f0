"""`streamlit run`, with every script run timed inside the server: the benches' common yardstick.

    python bench/timed_server.py RUN_LOG run app.py [streamlit's options]

Each script run (a page's, or a fragment's alone) appends one JSON line to RUN_LOG: when it started (Unix
time), its wall seconds, the CPU seconds of its thread, and whether it was a fragment's. A browser and
bench/load_protocol.py time an interaction from their own side, where the browsers' own delays count
(bench/README.md); these are the server's own seconds for the same runs, so the two benches can be compared
on what the server does. `summarize` reads a log back.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent


def server_command(run_log: str | Path | None) -> list[str]:
    """The command that starts `streamlit` (append "run", "app.py", ...): timed into `run_log` when given."""
    if run_log is None:
        return [sys.executable, "-m", "streamlit"]
    return [sys.executable, str(HERE / "timed_server.py"), str(Path(run_log).resolve())]


def time_script_runs(log: Path) -> None:
    """Wrap Streamlit's ScriptRunner._run_script (one call per script run, in the session's script thread)."""
    from streamlit.runtime.scriptrunner import script_runner

    run_script = script_runner.ScriptRunner._run_script
    lock = threading.Lock()

    def timed(self, rerun_data):
        started, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
        try:
            return run_script(self, rerun_data)
        finally:
            line = json.dumps(dict(start=round(started, 4), seconds=round(time.perf_counter() - wall, 5),
                                   cpu=round(time.thread_time() - cpu, 5),
                                   fragment=bool(rerun_data.fragment_id_queue)))
            with lock, open(log, "a") as out:
                out.write(line + "\n")

    script_runner.ScriptRunner._run_script = timed


def summarize(log: Path, *, since: float = 0.0, until: float = float("inf")) -> dict:
    """The runs that started in [since, until): how many, median and mean wall ms, median and total CPU s.
    A line that is not a whole run (the server stopped while writing it) is counted apart, not read."""
    runs, unreadable = [], 0
    if Path(log).exists():
        for line in Path(log).read_text().splitlines():
            try:
                run = json.loads(line)
                run = dict(start=float(run["start"]), seconds=float(run["seconds"]), cpu=float(run["cpu"]),
                           fragment=bool(run["fragment"]))
            except (ValueError, TypeError, KeyError):
                unreadable += 1
                continue
            if since <= run["start"] < until:
                runs.append(run)
    if not runs:
        return dict(runs=0, unreadable=unreadable)
    seconds, cpu = [r["seconds"] for r in runs], [r["cpu"] for r in runs]
    return dict(runs=len(runs), unreadable=unreadable, fragments=sum(r["fragment"] for r in runs),
                median_ms=round(1000 * statistics.median(seconds), 1),
                mean_ms=round(1000 * statistics.fmean(seconds), 1),
                median_cpu_ms=round(1000 * statistics.median(cpu), 1), cpu_s=round(sum(cpu), 2))


def print_server_runs(runs: dict | None, timed: int) -> None:
    """One line on `summarize`'s result, against the `timed` interactions a bench timed from its side."""
    if runs is None:
        return
    if not runs["runs"]:
        print("the server's own script runs: none logged in the sessions' window")
        return
    print(f"the server's own script runs (bench/timed_server.py): {runs['runs']} runs ({runs['fragments']} of "
          f"fragments) for {timed} timed interactions; wall median {runs['median_ms']} ms, mean {runs['mean_ms']} ms; "
          f"their threads' CPU {runs['cpu_s']} s, {1000 * runs['cpu_s'] / max(1, timed):.1f} ms per interaction"
          + (f"; {runs['unreadable']} torn lines left out" if runs["unreadable"] else ""))


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    time_script_runs(Path(sys.argv[1]))
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
