"""What a hostile or unlucky run folder, disk or file cannot do to ``python -m canon.train`` (issue 19).

* Nothing planted in the output folder (a symbolic link, a FIFO, a folder at the name of the lock or
  of a run file) makes a run write outside its folder, block, or lose a user's file: it is refused
  with one line naming it, before anything is written.
* A full disk or a file size limit is reported in one line with the resume hint; the previous
  checkpoint is kept.
* What can be known before training is checked before anything is written: images the models cannot
  take, an equivariant network too large to build.
* ``--overwrite`` sets the previous run aside until the new run's first checkpoint: a run that fails
  before it loses nothing.
* ``--resume`` refuses a dataset that changed since the checkpoint, and checkpoints whose payload is
  malformed although their checksum matches; ``--test-data`` with labels never trained on is named.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN

from canon.train import checkpoint as ck
from canon.train import main
from canon.train.loop import read_checkpoint
from canon.train.rundir import LOCK_NAME, OVERWRITTEN, RUN_FILES, RunDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [*TINY_TRAIN, "--methods", "plain", "--eval-batch-size", "400"]


def _main_exit(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


class Hung(BaseException):
    """Raised by :func:`_deadline` (not an OSError: the code under test may catch those)."""


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for writing blocks until a reader comes)."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds} s (blocked?)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _plant(path, kind: str, victim) -> None:
    if kind == "link":
        os.symlink(victim, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        os.mkdir(path)
    else:
        raise ValueError(kind)


WHAT = {"link": "symbolic link", "fifo": "FIFO", "folder": "folder"}


# -- things planted in the run folder ----------------------------------------------------------
@pytest.mark.parametrize(
    "name,kind,flag",
    [
        (LOCK_NAME, "link", None),
        (LOCK_NAME, "fifo", None),
        (LOCK_NAME, "folder", None),
        ("checkpoint.pt", "folder", "--overwrite"),
        ("checkpoint.pt", "link", "--resume"),
        ("metrics.json", "link", None),
        ("epochs.csv", "fifo", "--overwrite"),
    ],
)
def test_planted_entries_are_refused_and_nothing_is_written(tmp_path, capsys, name, kind, flag):
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT")
    out = tmp_path / "out"
    out.mkdir()
    _plant(out / name, kind, victim)
    before = sorted(os.listdir(out))
    with _deadline(60):
        code, err = _main_exit([*TINY, "--output-dir", str(out), *([flag] if flag else [])], capsys)
    assert code == 1 and f"{name} is a {WHAT[kind]}" in err and "nothing was written" in err, err
    assert victim.read_text() == "IMPORTANT"
    assert sorted(os.listdir(out)) == before  # no lock, config.json or temporary file appeared


def test_a_link_at_a_temporary_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT")
    path = tmp_path / "metrics.json"
    os.symlink(victim, f"{path}.tmp.{os.getpid()}")  # the name this process writes to first
    ck.write_atomic(str(path), lambda f: f.write(b"{}"))
    assert victim.read_text() == "IMPORTANT" and path.read_bytes() == b"{}"
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "victim.txt"]


@pytest.mark.parametrize("kind", ["link", "fifo", "folder"])
def test_write_atomic_refuses_what_stands_at_its_path(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT")
    path = tmp_path / "epochs.csv"
    _plant(path, kind, victim)
    with _deadline(30), pytest.raises(ck.WriteError, match=f"not written: a {WHAT[kind]}"):
        ck.write_atomic(str(path), lambda f: f.write(b"row"))
    assert victim.read_text() == "IMPORTANT" and not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_dangling_link_as_output_dir(tmp_path, capsys):
    out = tmp_path / "out"
    os.symlink(tmp_path / "missing", out)
    code, err = _main_exit([*TINY, "--output-dir", str(out)], capsys)
    assert code == 1 and "symbolic link" in err and "does not exist" in err
    assert not (tmp_path / "missing").exists()


# -- the disk says no -------------------------------------------------------------------------
def test_no_space_left_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"previous")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "write", full)
    with pytest.raises(ck.WriteError, match="no space left on the device holding") as e:
        ck.write_atomic(str(path), lambda f: f.write(b"new checkpoint"))
    assert "the previous file is kept" in str(e.value) and e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_file_size_limit_ends_the_run_with_one_line_and_the_resume_hint(tmp_path):
    out = tmp_path / "out"

    def limit():  # 64 KiB per file: config.json fits, a checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    proc = subprocess.run(
        [sys.executable, "-m", "canon.train", *TINY, "--output-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and "checkpoint.pt: not written" in last
    assert "file size limit" in last and "continue with: python -m canon.train" in last and "--resume" in last
    assert not (out / "checkpoint.pt").exists() and not [p for p in os.listdir(out) if ".tmp." in p]


# -- checked before anything is written -------------------------------------------------------
@pytest.mark.parametrize("size", ["1", "3"])
def test_images_the_models_cannot_take_are_refused_before_writing(tmp_path, capsys, size):
    out = tmp_path / "out"
    code, err = _main_exit([*TINY_TRAIN, "--image-size", size, "--output-dir", str(out)], capsys)
    assert code == 2 and "cannot run on this data's images" in err and "--image-size" in err
    assert not out.exists()


def test_an_equivariant_network_too_large_to_build_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _main_exit(
        [*TINY_TRAIN, "--methods", "equivariant", "--group", "C360", "--output-dir", str(out)], capsys
    )
    assert code == 2 and "|G| = 360" in err and "GiB" in err and "largest group order that fits" in err
    assert not out.exists()


# -- resume ------------------------------------------------------------------------------------
def _npz(path, n=120, seed=0, classes=3):
    g = np.random.default_rng(seed)
    np.savez(path, x=g.random((n, 1, 8, 8), dtype=np.float32), y=np.arange(n) % classes)


def test_resume_refuses_data_that_changed(tmp_path, capsys):
    data, out = tmp_path / "data.npz", tmp_path / "out"
    _npz(data)
    args = [*TINY, "--dataset", str(data), "--epochs", "2", "--stop-after", "1", "--output-dir", str(out)]
    main(args)  # stops after epoch 1 (returns, no exit)
    capsys.readouterr()
    _npz(data, seed=1)  # same file name, other images
    code, err = _main_exit([*args, "--resume"], capsys)
    assert code == 1 and "data differ from those the checkpoint was trained on" in err
    assert read_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 1


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main([*TINY, "--output-dir", str(out)])
    return read_checkpoint(str(out / "checkpoint.pt"))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(epoch=-5), r"'epoch' must be an int in \[0, 1\]"),
        (dict(epoch=10**6), r"'epoch' must be an int in \[0, 1\]"),
        (dict(epoch="1"), "'epoch' must be an int"),
        (dict(config=["not", "a", "dict"]), "'config' must be a dict"),
        (dict(step=-1), "'step' must be an int"),
        (dict(history=[]), "'history' must hold one row"),
        (dict(train_time=float("nan")), "'train_time' must be a finite number"),
        (dict(models={"plain": {"0.weight": [1.0]}}), "model state entries must be tensors"),
        (dict(rng={"torch": 1}), "'rng' must hold"),
    ],
)
def test_a_crafted_payload_with_a_valid_checksum_is_refused(payload, tmp_path, change, message):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(str(path), {**payload, **change})  # a valid checksum over the crafted payload
    with pytest.raises(ck.CheckpointError, match=message):
        read_checkpoint(str(path))


def test_the_sound_payload_reads_back(payload, tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(str(path), payload)
    assert read_checkpoint(str(path))["epoch"] == 1  # the checks above refuse only the crafted entries


# -- test data ---------------------------------------------------------------------------------
def test_test_labels_never_trained_on_are_named(tmp_path, capsys):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    _npz(train, classes=3)
    g = np.random.default_rng(2)
    np.savez(test, x=g.random((20, 1, 8, 8), dtype=np.float32), y=np.arange(20) % 5)  # labels 3 and 4 are new
    args = [a for a in TINY if a != "--quiet"]
    main([*args, "--dataset", str(train), "--test-data", str(test), "--output-dir", str(tmp_path / "out")])
    cap = capsys.readouterr()
    assert "warning: --test-data" in cap.err and "label(s) [3, 4]" in cap.err and "count as errors" in cap.err
    assert "8 of 20 test samples" in cap.err
    assert "evaluating 20 test images in" in cap.out  # and where the evaluation time goes


def test_run_files_cover_every_plot_name():
    # --overwrite and the previous-run check go by this list: every file a run writes is in it
    assert "canonical_grid_equivariant.png" in RUN_FILES and "canonical_grid.png" in RUN_FILES


def _plant_run(folder, tag: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    files = {"config.json": f"config {tag}".encode(), "checkpoint.pt": f"weights {tag}".encode()}
    for f, data in files.items():
        (folder / f).write_bytes(data)
    return files


def test_overwrite_keeps_the_previous_run_until_the_first_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    old = _plant_run(out, "A")
    d = RunDirectory(str(out), overwrite=True)  # the run then dies before its first checkpoint
    d.release()
    kept = out / OVERWRITTEN
    assert {f: (kept / f).read_bytes() for f in os.listdir(kept)} == old
    assert not any((out / f).exists() for f in RUN_FILES)
    # a second --overwrite after a run that never wrote a checkpoint keeps the first run, not that one
    (out / "config.json").write_bytes(b"config B")
    d = RunDirectory(str(out), overwrite=True)
    assert {f: (kept / f).read_bytes() for f in os.listdir(kept)} == old and not (out / "config.json").exists()
    d.checkpoint_written()
    d.release()
    assert not kept.exists()
    # a folder left beside a run that has a checkpoint (killed before the clean-up, or holding a user's file
    # rmdir left alone): that run is the one set aside, the folder's older files go
    kept.mkdir()
    (kept / "notes.txt").write_bytes(b"mine")
    (kept / "config.json").write_bytes(b"config stale")
    newer = _plant_run(out, "B2")
    RunDirectory(str(out), overwrite=True).release()
    assert {f: (kept / f).read_bytes() for f in newer} == newer and (kept / "notes.txt").read_bytes() == b"mine"
    for f in (*newer, "notes.txt"):
        (kept / f).unlink()
    kept.rmdir()
    # through the command line: a run that writes a checkpoint leaves no trace of the one it overwrote
    _plant_run(out, "C")
    assert main([*TINY, "--output-dir", str(out), "--overwrite", "--epochs", "1", "--angle-step", "0"]) is None
    assert f"previous run's files are in {out / OVERWRITTEN}" in capsys.readouterr().out
    assert not kept.exists() and read_checkpoint(str(out / "checkpoint.pt"))["epoch"] == 1


def test_overwrite_refuses_a_planted_entry_at_the_kept_folder_name(tmp_path, capsys):
    out = tmp_path / "run"
    old = _plant_run(out, "A")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / OVERWRITTEN)
    code, err = _main_exit([*TINY, "--output-dir", str(out), "--overwrite"], capsys)
    assert code == 1 and f"{OVERWRITTEN} is a symbolic link" in err and "Traceback" not in err
    assert {f: (out / f).read_bytes() for f in old} == old and os.listdir(elsewhere) == []


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.52 GiB"),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 32768000000 bytes."),
    ],
)
def test_out_of_memory_ends_the_run_with_one_line_naming_the_options(tmp_path, capsys, monkeypatch, error):
    from canon.train import cli

    def run(cfg, data):
        raise error

    monkeypatch.setattr(cli, "run", run)
    code, err = _main_exit([*TINY, "--output-dir", str(tmp_path / "run"), "--view-size", "24"], capsys)
    assert code == 1 and "Traceback" not in err, err
    assert "out of memory" in err and "--batch-size" in err and "--view-size 24" in err
