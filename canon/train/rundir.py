"""The output directory of a run: checked before anything is written, locked while the run lives.

* :func:`check_output_dir` only reads: the path must be (or become) a writable folder, not
  be in use by another run, and hold no previous run unless ``--resume`` or
  ``--overwrite`` was given. The command line calls it before loading data.
* :class:`RunDirectory` creates the folder, takes an exclusive ``fcntl.flock`` on
  ``OUTPUT_DIR/.lock`` (released when the process ends, however it ends), repeats the
  checks under the lock, removes temporary files left by killed writers and, with
  ``--overwrite``, the previous run's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from canon.train.checkpoint import remove_stale_temporaries
from canon.train.config import RunError

__all__ = ["RUN_FILES", "LOCK_NAME", "check_output_dir", "previous_run", "RunDirectory"]

# every file a run writes; a folder holding any of them holds a previous run
RUN_FILES = (
    "config.json",
    "checkpoint.pt",
    "epochs.csv",
    "metrics.json",
    "accuracy_vs_angle.png",
    "canonical_grid.png",
)
LOCK_NAME = ".lock"


def previous_run(folder: str) -> list[str]:
    """The run files present in ``folder``."""
    return [f for f in RUN_FILES if os.path.lexists(os.path.join(folder, f))]


def _holder(folder: str) -> str | None:
    """``"pid N"`` when another process holds the folder's lock, else None (creates nothing)."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_text(fd)
    finally:
        os.close(fd)  # also drops the lock if it was free and we took it
    return None


def _pid_text(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f"pid {pid}"
    return "pid unknown"


def _in_use(folder: str, holder: str) -> RunError:
    return RunError(
        f"--output-dir {folder} is in use by another run ({holder}); wait for it to end, or choose another --output-dir"
    )


def _refuse_previous(folder: str, found: list[str]) -> RunError:
    return RunError(
        f"--output-dir {folder} holds a previous run ({', '.join(found)}); add --resume to continue it, "
        "--overwrite to discard it, or choose another --output-dir"
    )


def check_output_dir(folder: str, resume: bool = False, overwrite: bool = False) -> None:
    """Read-only checks of ``folder`` (see the module docstring).

    Raises:
        RunError: a file is in the way, the nearest existing folder is not writable, another
            run holds the lock, or a previous run is there without ``resume``/``overwrite``.
    """
    path = os.path.abspath(folder)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise RunError(f"--output-dir {folder} {what}; choose a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise RunError(f"--output-dir {folder} {what} by this user")
    if probe != path:
        return  # a new folder: nothing in it yet
    holder = _holder(path)
    if holder:
        raise _in_use(folder, holder)
    found = previous_run(path)
    if found and not (resume or overwrite):
        raise _refuse_previous(folder, found)


class RunDirectory:
    """Create, lock and tidy the run folder; ``release()`` (or process exit) unlocks it.

    Example::

        d = RunDirectory("runs/x", resume=False, overwrite=False)  # raises RunError
        try:
            ...  # write checkpoint.pt, metrics.json, ...
        finally:
            d.release()
    """

    def __init__(self, folder: str, resume: bool = False, overwrite: bool = False):
        self.folder = folder
        check_output_dir(folder, resume, overwrite)
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(
                f"--output-dir {folder}: cannot create the folder or its lock file: {e.strerror or e}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_text(fd)
            os.close(fd)
            raise _in_use(folder, holder) from None
        self._fd: int | None = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            # under the lock: a run that finished between the check above and now is seen here
            found = previous_run(folder)
            if found and not (resume or overwrite):
                raise _refuse_previous(folder, found)
            self.removed_temporaries = remove_stale_temporaries(folder, RUN_FILES)
            if overwrite:
                for f in found:
                    os.remove(os.path.join(folder, f))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Unlock (idempotent). The lock file stays: removing it would let two runs lock two different files."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
