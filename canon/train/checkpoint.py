"""Checkpoint files of ``python -m canon.train``: safe to load, checked, written atomically.

A checkpoint is a ``torch.save`` of one dict holding only tensors and plain Python
values (dict, list, tuple, str, int, float, bool, None), so it loads with
``torch.load(..., weights_only=True)``: a file that holds anything else (a pickled
object whose loading would run code) is refused before any of it is built. Beside
the payload the file carries ``"sha256"``, the digest of a canonical serialization of
the payload (:func:`payload_digest`): a file whose tensor bytes were damaged after it
was written no longer matches and is refused, as are empty, truncated, text and
foreign files, other checkpoint formats and payloads with NaN/Inf in a floating tensor.

Writes go to ``<path>.tmp.<pid>`` in the same folder (created exclusively, never through a
link), are flushed to disk, then ``os.replace``-d over the old file, so a reader sees the old
or the new checkpoint, never a mix; a link, folder, FIFO or device standing at ``path`` is
refused, and a full disk or file size limit is reported in one line (:class:`WriteError`).
A writer killed mid-write leaves its temporary file behind; :func:`remove_stale_temporaries`
deletes such files (call it only while holding the run directory's lock, when no writer can
be alive).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import signal
import stat
import struct
import threading

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "payload_digest",
    "nonfinite_entries",
    "write_atomic",
    "WriteError",
    "special_file",
    "save_checkpoint",
    "read_checkpoint",
    "remove_stale_temporaries",
]

CHECKPOINT_FORMAT = 2  # 1: pickled numpy RNG state, no checksum (refused: it needs weights_only=False)
_DIGEST_KEY = "sha256"
_TEMP_RE = re.compile(r"^(?P<base>.+)\.tmp\.\d+$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable, foreign, damaged or non-finite."""


def _feed(h, obj, where: str) -> None:
    """Hash ``obj`` with a type tag and a length for every value, so distinct payloads never collide by layout."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        s = str(obj).encode()
        h.update(b"I%d:" % len(s) + s)
    elif isinstance(obj, float):
        h.update(b"R" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        s = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(s) + s)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"X{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, (list, tuple)):
        h.update(b"%s%d:" % (b"L" if isinstance(obj, list) else b"U", len(obj)))
        for i, v in enumerate(obj):
            _feed(h, v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        h.update(b"D%d:" % len(obj))
        for k, v in obj.items():
            _feed(h, k, where)
            _feed(h, v, f"{where}[{k!r}]")
    else:
        raise TypeError(
            f"checkpoint: {where} is a {type(obj).__name__}; a checkpoint holds only tensors, dict, list, tuple, str, "
            "int, float, bool and None"
        )


def payload_digest(payload: dict) -> str:
    """sha256 (hex) of a canonical serialization of ``payload``.

    Type tags, lengths, dtypes, shapes and raw tensor bytes, in order.

    Raises:
        TypeError: the payload holds a value that is not a tensor or a plain Python value.
    """
    h = hashlib.sha256()
    _feed(h, payload, "payload")
    return h.hexdigest()


def nonfinite_entries(obj, where: str = "") -> list[str]:
    """Paths (``models['plain']['0.weight']``) of floating tensors holding NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        return [where] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_entries(v, f"{where}[{k!r}]")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in nonfinite_entries(v, f"{where}[{i}]")]
    return []


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _sigint_held():
    """Hold SIGINT (Ctrl-C) until the block ends, then raise it as KeyboardInterrupt.

    An interrupt inside ``torch.save`` surfaces as a RuntimeError from its zip writer (the
    KeyboardInterrupt is lost), so the run would end with a traceback instead of the resume hint;
    a write of a few milliseconds is better finished. A second Ctrl-C interrupts at once (a hung
    file system stays interruptible); an error in the block is raised as the interrupt's cause.
    Only in the main thread and only while Python's default handler is installed.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received = []

    def hold(signum, frame):
        received.append(signum)
        if len(received) > 1:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        if received:
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def special_file(path: str) -> str | None:
    """What stands at ``path`` when it is neither absent nor a regular file (``"a symbolic link to
    …"``, ``"a folder"``, ``"a FIFO (named pipe)"``, a device, a socket), else None. Follows no link
    and opens nothing (opening a FIFO would block)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            return f"a symbolic link to {os.readlink(path)}"
        return "a symbolic link"
    for test, what in _SPECIAL_KINDS:
        if test(mode):
            return what
    return "not a regular file"


_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class WriteError(OSError):
    """A file of the run could not be written: what stands in its place, or why the system refused
    (no space left, file size limit, ...). The previous file at that path, if any, is unchanged."""


_WRITE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is larger than this process may write (file size limit, ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


def _create_exclusive(tmp: str) -> int:
    """A new regular file at ``tmp`` (never a link followed, never an existing file reused)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(tmp, flags, 0o644)
    except FileExistsError:
        # this pid's name, taken: left by a killed writer or planted (a link). The caller holds the
        # run folder's lock, so no writer of ours is using it: remove the entry itself (unlink never
        # follows a link) and create afresh.
        os.unlink(tmp)
        return os.open(tmp, flags, 0o644)


def write_atomic(path: str, write) -> None:
    """Call ``write(f)`` on an in-memory binary file, then put its bytes at ``path`` atomically.

    The bytes go to a new ``<path>.tmp.<pid>`` (created exclusively, never through a link), are
    flushed to disk and ``os.replace``-d over ``path``. On any failure the temporary file is removed
    and ``path`` is unchanged. Ctrl-C during the write is held until the file is in place, then
    raised (``KeyboardInterrupt``).

    Raises:
        WriteError: something other than a regular file (a link, a folder, a FIFO, a device)
            stands at ``path``, or the system refused the bytes (no space left, file size limit):
            one line naming ``path`` and the reason.
    """
    what = special_file(path)
    if what is not None:
        raise WriteError(
            f"{path}: not written: {what} stands in its place, and a run writes regular files only, never "
            "through a link; remove it, or choose another --output-dir"
        )
    tmp = f"{path}.tmp.{os.getpid()}"
    with _sigint_held():
        buf = io.BytesIO()
        write(buf)
        data = buf.getbuffer()
        try:
            fd = _create_exclusive(tmp)
            try:
                for start in range(0, len(data), 1 << 24):
                    chunk = data[start : start + (1 << 24)]
                    done = 0
                    while done < len(chunk):
                        done += os.write(fd, chunk[done:])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            reason = _WRITE_REASONS.get(e.errno, e.strerror or str(e))
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                reason += f" holding {os.path.dirname(os.path.abspath(path))}"
            kept = "the previous file is kept" if os.path.isfile(path) else "nothing was written"
            err = WriteError(f"{path}: not written ({len(data)} bytes): {reason}; {kept}")
            err.errno = e.errno
            raise err from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def save_checkpoint(path: str, payload: dict) -> None:
    """Write ``payload`` with its checksum, atomically.

    Raises:
        TypeError: the payload holds something other than tensors and plain values.
        CheckpointError: a floating tensor holds NaN or Inf (nothing is written).
    """
    if _DIGEST_KEY in payload:
        raise ValueError(f"save_checkpoint: the payload must not have a key {_DIGEST_KEY!r} (it is added here)")
    digest = payload_digest(payload)
    bad = nonfinite_entries(payload)
    if bad:
        raise CheckpointError(f"{path}: not written: NaN/Inf in {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}")
    write_atomic(path, lambda f: torch.save({**payload, _DIGEST_KEY: digest}, f))


def _load(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (a checkpoint whose writing never finished?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False: never repeat that advice, quote only the reason
        detail = next((ln.strip() for ln in str(e).splitlines() if "nsupported" in ln), _first_line(e))
        raise CheckpointError(
            f"{path}: refused, not loaded: it holds something other than tensors and plain values ({detail}); "
            f"checkpoints of this canon version (format {CHECKPOINT_FORMAT}) never do, so the file was written by an "
            "earlier version (format 1), "
            "comes from elsewhere or was modified (loading it without weights_only could run code)"
        ) from None
    except Exception as e:  # torch/zip/pickle raise many kinds for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, damaged or another format): {type(e).__name__}: "
            f"{_first_line(e)}"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


def read_checkpoint(path: str) -> dict:
    """The payload of a checkpoint written by :func:`save_checkpoint`, after every check passed.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: empty, truncated, damaged, foreign or tampered file; another
            format; checksum mismatch; NaN/Inf in a floating tensor.
    """
    ck = _load(path)
    if not isinstance(ck, dict) or "format" not in ck:
        raise CheckpointError(f"{path}: not a canon.train checkpoint (no 'format' entry; found a {type(ck).__name__})")
    if ck["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ck['format']!r}, but this version of canon reads format {CHECKPOINT_FORMAT} "
            "only"
        )
    stored = ck.pop(_DIGEST_KEY, None)
    if not isinstance(stored, str):
        raise CheckpointError(f"{path}: the checkpoint carries no checksum; refused")
    if payload_digest(ck) != stored:
        raise CheckpointError(
            f"{path}: checksum mismatch: the file was damaged or modified after it was written; refused"
        )
    bad = nonfinite_entries(ck)
    if bad:
        raise CheckpointError(f"{path}: NaN/Inf in {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}; refused")
    return ck


def remove_stale_temporaries(folder: str, names: tuple[str, ...]) -> list[str]:
    """Delete ``<name>.tmp.<pid>`` files left in ``folder`` by killed writers, for the given output names.

    Returns what was removed.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(folder):
            m = _TEMP_RE.match(entry)
            if m and m.group("base") in names:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, entry))
                    removed.append(entry)
    return removed
