"""Where aecore keeps things on a user's machine.

- home: $AECORE_HOME, else the platform's user data dir (e.g. ~/.local/share/aecore)
- data: --data-dir, else $AECORE_DATA_DIR, else <home>/data   (laid out as <data>/<dataset>/...)
- user models: <home>/models/<name>/  (what the app's Train page saves)
- pretrained: the repository's pretrained/ folder, or $AECORE_PRETRAINED
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"


def home_dir() -> Path:
    return Path(os.environ.get("AECORE_HOME") or user_data_dir("aecore", appauthor=False))


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AECORE_DATA_DIR")
    return Path(env).expanduser() if env else home_dir() / "data"


def user_models_dir() -> Path:
    return home_dir() / "models"


def pretrained_dir() -> Path:
    env = os.environ.get("AECORE_PRETRAINED")
    return Path(env) if env else PACKAGE_DIR.parent / "pretrained"
