"""Atomic file writes: a reader never sees a half-written file, a failed write leaves nothing behind.

Every ludl writer goes through `atomic_write` (or `atomic_write_bytes`): the data go to a temporary file in the
destination's own folder (same file system, so the final `os.replace` is atomic on POSIX and Windows), and the
temporary file is removed if anything raises before the rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _fsync_dir(folder: Path) -> None:
    # Making the rename itself durable needs an fsync of the folder; not possible on Windows, so best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it onto `path`, on failure delete it.

    Args:
        path: final destination; its folder must exist.
        fsync: flush file (and folder) to disk before/after the rename, for durability across power loss.
        suffix: suffix of the temporary file (default: the destination's full suffix, e.g. ``.nii.gz``, because
            some writers such as SimpleITK choose the format from the file name).

    Example:
        >>> with atomic_write(out / "dose.nii.gz") as tmp:  # doctest: +SKIP
        ...     sitk.WriteImage(image, str(tmp))
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {dest}: folder {folder} does not exist; create it first")
    if suffix is None:
        suffix = "".join(dest.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer for {dest} produced no file at {tmp}")
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        # mkstemp creates files with mode 0600; give the result the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
        if fsync:
            _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write `text` to `path` atomically (UTF-8, newlines as given) and return the path."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)
