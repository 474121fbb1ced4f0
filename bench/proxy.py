"""The README's nginx recipe, run on loopback: an nginx.conf around the recipe between the README's
markers, and nginx started on it in front of app servers. Used by bench/load_protocol.py --servers and
tests/test_proxy.py, so both run exactly what the README tells an operator to run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def visitor_addresses(n: int) -> list[str]:
    """n client addresses on loopback (Linux answers on all of 127/8): one visitor each, as a classroom's
    machines reach the proxy from their own addresses (the recipe hashes the client address)."""
    return [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(n)]


def readme_recipe() -> str:
    """The nginx `http` block between the README's markers, unindented."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- nginx:begin -->", 1)[1].split("<!-- nginx:end -->", 1)[0]
    return "\n".join(line[4:] for line in block.strip("\n").splitlines())


def nginx_conf(recipe: str, ports: list[int], listen: int, work: Path) -> str:
    """A whole nginx.conf around the recipe: its upstream servers are `ports` (as many as given), it listens
    on `listen`, every file it writes is inside `work`."""
    servers = "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
    recipe = re.sub(r"(?m)^\s*server 127\.0\.0\.1:850\d;[^\n]*\n?", "", recipe)
    recipe = re.sub(r"(upstream aecore \{\n[^\n]*\n)", lambda m: m.group(1) + servers + "\n", recipe, count=1)
    recipe = re.sub(r"listen 8080;", f"listen 127.0.0.1:{listen};", recipe)
    temps = "\n".join(f"    {kind}_temp_path {work / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'};
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$remote_addr $upstream_addr "$request" $status';
    access_log {work / 'access.log'} upstream;
{temps}
{recipe}
}}
"""


def start_nginx(ports: list[int], listen: int, work: Path) -> subprocess.Popen:
    """nginx in the foreground on the README's recipe, in front of the servers on `ports`."""
    if NGINX is None:
        raise RuntimeError("Debian's nginx is not installed (apt-get install nginx-light)")
    (work / "nginx.conf").write_text(nginx_conf(readme_recipe(), ports, listen, work))
    return subprocess.Popen([NGINX, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
