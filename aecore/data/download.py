"""Downloads through torchvision, only when allowed and only after a quick reachability probe.

`download=None` means "if not offline"; AECORE_OFFLINE=1 (the tests, air-gapped machines) turns
every download off, even an explicit download=True, without touching the network. Before handing
a URL to torchvision (whose urllib calls can hang for minutes on a dead network) we try a TCP
connection to the host with a 3 s limit, name resolution included; a failed probe is remembered
for 5 minutes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from aecore.errors import DataError

log = logging.getLogger("aecore.data")

PROBE_TIMEOUT_S = 3.0
_NEGATIVE_TTL_S = 300.0
_unreachable: dict[str, float] = {}   # host -> when a probe failed


def offline() -> bool:
    return os.environ.get("AECORE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def want_download(download: bool | None) -> bool:
    """The download argument resolved: never when AECORE_OFFLINE=1, else None -> True."""
    return not offline() and (download is None or bool(download))


def disabled_reason() -> str:
    """Why no download was tried, for messages."""
    return "download disabled (AECORE_OFFLINE=1)" if offline() else "download disabled (download=False)"


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to url's host within `timeout` seconds (DNS included)?"""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    failed_at = _unreachable.get(host)
    if failed_at is not None and time.monotonic() - failed_at < _NEGATIVE_TTL_S:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts; a daemon thread bounds the whole probe
    thread = threading.Thread(target=probe, daemon=True, name="aecore-net-probe")
    thread.start()
    thread.join(timeout)
    ok = bool(result and result[0])
    if not ok:
        _unreachable[host] = time.monotonic()
    return ok


def fetch(urls: list[str], folder: Path, *, filename: str, md5: str | None, extract: bool = False) -> None:
    """Download one file (trying each mirror) into folder with torchvision's checked downloader."""
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    errors = []
    for url in urls:
        if not reachable(url):
            errors.append(f"{urlparse(url).hostname}: unreachable")
            continue
        try:
            if extract:
                download_and_extract_archive(url, str(folder), filename=filename, md5=md5)
            else:
                download_url(url, str(folder), filename=filename, md5=md5)
            return
        except Exception as e:  # HTTP errors, checksum failures, disk full: try the next mirror
            errors.append(f"{url}: {e}")
    raise DataError(f"download of {filename} failed ({'; '.join(errors)})")
