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

from aecore.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"
MAX_NAME_BYTES = 255           # one path component on common file systems


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


def safe_name(name: str, *, what: str = "name") -> str:
    """`name` if it is one plain path component; ConfigError otherwise.

    For names that reach a path from a user or a URL: they must not leave their folder ('..',
    'a/b', '/etc'), reach a hidden or aside folder ('.x', the store's '.m.old-*'), or break the
    file system (NUL, control characters, more than 255 bytes).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} is empty")
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    if name in (".", ".."):
        raise ConfigError(f"{what} {shown} is not a name (it means a folder itself)")
    if "/" in name or "\\" in name or (os.sep in name) or (os.altsep and os.altsep in name):
        raise ConfigError(f"{what} {shown} contains a path separator; give a plain name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{what} {shown} contains a control character (such as NUL or a newline)")
    if name.startswith("."):
        raise ConfigError(f"{what} {shown} starts with '.'; hidden names are not used")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ConfigError(f"{what} {shown} is too long ({len(name)} characters; at most {MAX_NAME_BYTES} bytes)")
    return name


def user_model_path(name: str) -> Path:
    """The folder of the user's model `name` (checked by `safe_name`): always directly in user_models_dir()."""
    return user_models_dir() / safe_name(name, what="model name")


# --- what a visitor of a shared app server may read ----------------------------------------------
FOLDER_ROOTS_ENV = "AECORE_FOLDER_ROOTS"


def allowed_folder_roots() -> list[Path]:
    """The folders an app visitor may train on (with everything below them), as the operator set
    them in $AECORE_FOLDER_ROOTS (os.pathsep-separated); none by default. Resolved, existing folders
    only, so a symlink cannot later widen what they cover."""
    roots: list[Path] = []
    for raw in (os.environ.get(FOLDER_ROOTS_ENV) or "").split(os.pathsep):
        if raw.strip():
            root = Path(raw.strip()).expanduser().resolve()
            if root.is_dir() and root not in roots:
                roots.append(root)
    return roots


def uploads_dir() -> Path:
    """Where the app keeps the image archives visitors upload to train on (one file each)."""
    return home_dir() / "uploads"


def inside(path: Path, root: Path) -> bool:
    """True when the resolved `path` is `root` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def check_allowed_folder(path: str | os.PathLike) -> Path:
    """The resolved `path` when it lies inside an allowed root or the uploads folder, so that an app
    visitor never reads elsewhere on the server ('/etc', '..', a symlink out of a root); ConfigError
    otherwise. The check is on the real path: links are followed before comparing."""
    raw = str(path).strip()
    if not raw or "\0" in raw:
        raise ConfigError("type the path of an image folder")
    roots = allowed_folder_roots() + [uploads_dir().resolve()]
    try:
        real = Path(raw).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):     # a symlink loop, a name the system refuses
        real = None
    if real is not None and any(inside(real, root) for root in roots):
        return real
    allowed = allowed_folder_roots()
    where = (", ".join(str(r) for r in allowed) if allowed
             else f"none: the server's operator sets them with ${FOLDER_ROOTS_ENV}")
    raise ConfigError(f"{raw[:120]!r} is outside the folders this server lets you read (allowed: {where}); "
                      "upload your images as a .zip instead")
