"""Where graddoctor writes its outputs: never onto an input, always all-or-nothing.

Every verb that writes a file (export, report, lab results) or a folder (TensorBoard logs, a
lab's output folder) asks `check_output` first: an output that resolves (symbolic links,
`..`, hard links) to an input store, to one of its -wal/-shm/-journal side files or to any
other input file is refused, and so are a missing parent folder, a folder where a file is
expected and a file where a folder is expected. `write_atomic` then writes a file to a
temporary name in the same folder and renames it over the target: a failed write leaves the
old output as it was. Knows nothing of stores or runs: plain paths only.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import GradDoctorError

SIDE_FILES = ("-wal", "-shm", "-journal")


class OutputError(GradDoctorError, OSError):
    """An output path that would overwrite an input, or that cannot be written."""


def input_paths(inputs: Iterable[str | os.PathLike[str] | None]) -> list[Path]:
    """The inputs and, for each, the SQLite side files that may sit beside it."""
    out = []
    for item in inputs:
        if item is None or str(item) in ("", ":memory:"):
            continue
        path = Path(item)
        out.append(path)
        out.extend(path.with_name(path.name + suffix) for suffix in SIDE_FILES)
    return out


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def clobbers(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]) -> Path | None:
    """The input that `output` would overwrite (same real path or same inode), or None."""
    target = Path(os.path.realpath(output))
    target_id = _identity(target)
    for path in input_paths(inputs):
        if Path(os.path.realpath(path)) == target:
            return path
        if target_id is not None and _identity(path) == target_id:
            return path
    return None


def check_output(output: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (),
                 folder: bool = False, what: str = "output", make_parents: bool = False) -> Path:
    """Refuse an output that overwrites an input or cannot be a file (a folder with `folder=True`).

    Args:
        output: the path the user gave.
        inputs: every file read to make this output (a store: its side files are checked too).
        folder: the output is a folder (created if missing) rather than a file.
        what: how the error names the output, e.g. "-o" or "--out".
        make_parents: create missing parent folders instead of refusing them.

    Raises:
        OutputError: the output is an input, a folder where a file is expected (or the
            reverse), or its parent folder is missing (or is not a folder).
    """
    if not isinstance(output, (str, os.PathLike)) or str(output) == "":
        raise OutputError(f"{what} must be a file path, got {output!r}.")
    path = Path(output)
    victim = clobbers(path, inputs)
    if victim is not None:
        raise OutputError(f"{what} {str(path)!r} is the input {str(victim)!r}: writing there would destroy it. "
                          f"Give another output path.")
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {str(path)!r} is a file, but a folder is expected here (it holds several "
                              f"files): give a folder path such as {str(path.with_suffix(''))+'_dir'!r}.")
    elif path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder; give a file path such as {str(path / 'out')!r}.")
    parent = path.parent if str(path.parent) else Path(".")
    if make_parents and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create the folder {str(parent)!r} for {what} {str(path)!r}: "
                              f"{err.strerror or err}.") from None
    if not parent.is_dir():
        state = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {what} {str(path)!r}: the folder {str(parent)!r} {state}. "
                          f"Create it first, or give another path.")
    return path


def make_folder(path: Path, *, what: str = "output folder") -> Path:
    """Create an output folder (and its parents), or say clearly why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the {what} {str(path)!r}: {err.strerror or err}. "
                          f"Give a writable folder path.") from None
    return path


@contextlib.contextmanager
def write_atomic(output: str | os.PathLike[str], *, binary: bool = False, newline: str | None = None,
                 what: str = "output") -> Iterator[IO]:
    """Open a temporary file beside `output`; on success it replaces `output`, on failure it is removed.

    A target that exists and is not a regular file (/dev/null, a pipe) is written in place:
    it cannot be replaced by a rename. Any OSError becomes an OutputError naming the path.
    """
    path = Path(output)
    mode = "wb" if binary else "w"
    kwargs = {} if binary else {"encoding": "utf-8", "newline": newline}
    try:
        special = path.exists() and not stat.S_ISREG(os.stat(path).st_mode)
        if special:
            with open(path, mode, **kwargs) as f:
                yield f
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as err:
        raise OutputError(f"cannot write {what} {str(path)!r}: {err.strerror or err}.") from None
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise OutputError(f"cannot write {what} {str(path)!r}: {err.strerror or err}; "
                          f"an older file there was left as it was.") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
