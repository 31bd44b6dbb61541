"""The output directory of a run: checked before anything is written, locked while the run lives.

* :func:`check_output_dir` only reads: the path must be (or become) a writable folder, not
  be in use by another run, and hold no previous run unless ``--resume`` or
  ``--overwrite`` was given. The command line calls it before loading data.
* :class:`RunDirectory` creates the folder, takes an exclusive ``fcntl.flock`` on
  ``OUTPUT_DIR/.lock`` (released when the process ends, however it ends), repeats the
  checks under the lock and removes temporary files left by killed writers. With
  ``--overwrite`` it moves the previous run's files into ``OUTPUT_DIR/overwritten/``, where
  they stay until a run in the folder has written its first checkpoint
  (:meth:`RunDirectory.checkpoint_written`): a run that fails before that (a bad option found
  late, a crash, a kill) loses nothing. If that folder is already there, the files beside it
  belong to a run that never wrote a checkpoint; they are removed and the folder is kept.

Nothing planted in the folder turns a run against its owner: the lock and every run file are
regular files or absent. A symbolic link, folder, FIFO, device or socket at one of their names
is refused with a message before anything is written (the lock is opened with ``O_NOFOLLOW``
and ``O_NONBLOCK`` and checked again once open; :func:`canon.train.checkpoint.write_atomic`
writes the other files through fresh temporary files, never through a link).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

from canon.train.checkpoint import remove_stale_temporaries, special_file
from canon.train.config import CANONICALIZING, RunError

__all__ = ["RUN_FILES", "LOCK_NAME", "OVERWRITTEN", "check_output_dir", "previous_run", "RunDirectory"]

# every file a run writes; a folder holding any of them holds a previous run
RUN_FILES = (
    "config.json",
    "checkpoint.pt",
    "epochs.csv",
    "metrics.json",
    "accuracy_vs_angle.png",
    "canonical_grid.png",
    *(f"canonical_grid_{name}.png" for name in CANONICALIZING if name != "canonicalized"),
)
LOCK_NAME = ".lock"
OVERWRITTEN = "overwritten"  # --overwrite: the previous run's files, until the new run's first checkpoint
_LOCK_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def previous_run(folder: str) -> list[str]:
    """The run files present in ``folder``."""
    return [f for f in RUN_FILES if os.path.lexists(os.path.join(folder, f))]


def _refuse_planted(folder: str) -> None:
    """RunError when something other than a regular file stands at the lock's or a run file's name."""
    planted = [(f, what) for f in (LOCK_NAME, *RUN_FILES) if (what := special_file(os.path.join(folder, f)))]
    if planted:
        listed = "; ".join(f"{f} is {what}" for f, what in planted)
        raise RunError(
            f"--output-dir {folder}: {listed}. A run only ever writes regular files there and never follows a link "
            "out of its folder, so it refuses to start (nothing was written); remove "
            f"{'it' if len(planted) == 1 else 'them'}, or choose another --output-dir"
        )


def _open_lock(path: str, flags: int) -> int:
    """The lock file, opened without following a link or blocking on a FIFO, checked to be a regular file."""
    fd = os.open(path, flags | _LOCK_FLAGS, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in after the check of its name
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _holder(folder: str) -> str | None:
    """``"pid N"`` when another process holds the folder's lock, else None (creates nothing)."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = _open_lock(path, os.O_RDONLY)
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
    if os.path.islink(path) and not os.path.exists(path):
        raise RunError(
            f"--output-dir {folder} is a symbolic link to {os.readlink(path)}, which does not exist; create that "
            "folder, or choose another --output-dir"
        )
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = f"is {special_file(path) or 'a file'}" if probe == path else f"cannot be created: {probe} is a file"
        raise RunError(f"--output-dir {folder} {what}; choose a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise RunError(f"--output-dir {folder} {what} by this user")
    if probe != path:
        return  # a new folder: nothing in it yet
    _refuse_planted(folder)
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
            _refuse_planted(folder)
            fd = _open_lock(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT)
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
            _refuse_planted(folder)
            found = previous_run(folder)
            if found and not (resume or overwrite):
                raise _refuse_previous(folder, found)
            self.removed_temporaries = remove_stale_temporaries(folder, RUN_FILES)
            self.set_aside = _set_aside(folder, found) if overwrite and found else False
            self._keeping = _kept_folder(folder)
        except BaseException:
            self.release()
            raise

    def checkpoint_written(self) -> None:
        """The run has a checkpoint of its own: the files an ``--overwrite`` set aside go (idempotent)."""
        if self._keeping:
            self._keeping = False
            _discard_set_aside(self.folder)

    def release(self) -> None:
        """Unlock (idempotent). The lock file stays: removing it would let two runs lock two different files."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _kept_folder(folder: str, strict: bool = False) -> bool:
    """Whether ``OUTPUT_DIR/overwritten`` is there as a folder; something else there is left alone, or with
    ``strict`` (an --overwrite about to use that name) refused with a RunError."""
    path = os.path.join(folder, OVERWRITTEN)
    what = special_file(path)
    if what is None and os.path.lexists(path):
        what = "a file"
    if what == "a folder":
        return True
    if what is None or not strict:
        return False
    raise RunError(
        f"--output-dir {folder}: {OVERWRITTEN} is {what}. A run keeps the files that --overwrite sets aside in a "
        "folder of that name and never follows a link out of its folder, so it refuses to start; remove it, or "
        "choose another --output-dir"
    )


def _open_kept(folder: str) -> int:
    return os.open(os.path.join(folder, OVERWRITTEN), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def _set_aside(folder: str, found: list[str]) -> bool:
    """--overwrite: move the previous run's files into ``OUTPUT_DIR/overwritten``. When that folder already
    holds an earlier run and the files beside it have no checkpoint (their run failed before its first),
    those files are removed and the folder kept; when they do have one (a kill between the checkpoint and
    its clean-up, or a folder ``rmdir`` could not remove), the folder's run files go and these take their
    place. True (the folder holds a previous run now)."""
    try:
        kept = _kept_folder(folder, strict=True)
        if kept and "checkpoint.pt" not in found:
            for f in found:
                os.remove(os.path.join(folder, f))
            return True
        if kept:
            _discard_set_aside(folder)  # (the folder itself stays when something else is in it)
        if not _kept_folder(folder, strict=True):
            os.mkdir(os.path.join(folder, OVERWRITTEN))
        fd = _open_kept(folder)  # no link followed: the renames land in this very folder
        try:
            for f in found:
                os.rename(os.path.join(folder, f), f, dst_dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise RunError(
            f"--output-dir {folder}: --overwrite cannot set the previous run aside in {OVERWRITTEN}/: {e.strerror or e}"
        ) from None
    return True


def _discard_set_aside(folder: str) -> None:
    """Remove the run files in ``OUTPUT_DIR/overwritten``, then the folder if nothing else is in it."""
    with contextlib.suppress(OSError):  # gone, or replaced by something that is not a folder: nothing to do
        fd = _open_kept(folder)
        try:
            for f in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f, dir_fd=fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):  # something else was put there: left as it is
            os.rmdir(os.path.join(folder, OVERWRITTEN))
