"""Reliability of ``python -m canon.train``: safe and checked checkpoints, guarded output folders,
options validated before anything is written, non-finite training stopped, interruption.

Every test here reproduces one failure of issue 12 and checks that it now fails clearly.
"""

import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from functools import partial

import pytest
import torch
from conftest import TINY_TRAIN, train_config

from canon.train import load_checkpoint, main, run
from canon.train.checkpoint import CheckpointError, payload_digest, read_checkpoint, save_checkpoint, write_atomic
from canon.train.config import ConfigError
from canon.train.loop import NonFiniteError
from canon.train.rundir import LOCK_NAME, RunDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [*TINY_TRAIN, "--eval-batch-size", "400"]


def _imports(name: str) -> bool:
    try:
        __import__(name)
    except Exception:  # missing, or built for another torch (as PyPI's torchvision beside the CPU torch)
        return False
    return True


cfg_of = partial(train_config, TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A finished tiny run (both methods that carry weights worth checking)."""
    out = tmp_path_factory.mktemp("run")
    run(cfg_of("--group", "C4", "--methods", "canonicalized,plain", "--output-dir", str(out)), digits)
    return out


def _main_exit(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


class Marker:
    """Unpickling this calls ``os.mkdir(path)``: stands in for any code an attacker could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# -- checkpoints ------------------------------------------------------------------
def test_checkpoint_is_plain_data_with_a_matching_checksum(trained):
    raw = torch.load(trained / "checkpoint.pt", map_location="cpu", weights_only=True)
    digest = raw.pop("sha256")
    assert payload_digest(raw) == digest
    assert raw["format"] == 2 and raw["epoch"] == 1 and set(raw["models"]) == {"canonicalized", "plain"}
    m = load_checkpoint(str(trained / "checkpoint.pt"))
    assert m.epoch == 1 and m.plain is not None and not m.plain.training


def test_checksum_covers_values_types_and_layout():
    base = {"a": torch.arange(4.0), "b": [1, 2.0, "x", None, True]}
    d = payload_digest(base)
    variants = [
        {"a": torch.arange(4.0).reshape(2, 2), "b": [1, 2.0, "x", None, True]},  # same bytes, other shape
        {"a": torch.arange(4.0).double(), "b": [1, 2.0, "x", None, True]},
        {"a": torch.arange(4.0), "b": (1, 2.0, "x", None, True)},  # tuple, not list
        {"a": torch.arange(4.0), "b": [1.0, 2.0, "x", None, True]},  # float, not int
        {"a": torch.arange(4.0), "b": [1, 2.0, "x", None, 1]},  # int, not bool
    ]
    assert all(payload_digest(v) != d for v in variants)
    with pytest.raises(TypeError, match="holds only tensors"):
        payload_digest({"a": Marker("x")})


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("via", ["torch.save", "pickle"])
def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, via, capsys, digits):
    marker = tmp_path / "code-ran"
    evil = {"format": 2, "models": Marker(marker), "sha256": "0" * 64}
    out = tmp_path / "run"
    out.mkdir()
    path = out / "checkpoint.pt"
    if via == "torch.save":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError, match="refused, not loaded"):
        read_checkpoint(str(path))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    code, err = _main_exit([*TINY, "--methods", "plain", "--output-dir", str(out), "--resume"], capsys)
    assert code == 1 and "--resume" in err and str(path) in err and "Traceback" not in err
    assert not marker.exists(), "loading the checkpoint ran code"
    if via == "torch.save":  # the file really is hostile: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def _flip_tensor_bytes(path, tensor: torch.Tensor) -> None:
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    raw[at + len(needle) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_damaged_tensor_bytes_are_caught_by_the_checksum(trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    good = (trained / "checkpoint.pt").read_bytes()
    path = out / "checkpoint.pt"
    path.write_bytes(good)
    w = read_checkpoint(str(path))["models"]["plain"]["head.1.weight"]
    _flip_tensor_bytes(path, w)
    # torch itself loads the damaged file without complaint: only the checksum sees it
    damaged = torch.load(path, weights_only=True)["models"]["plain"]["head.1.weight"]
    assert not torch.equal(damaged, w)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(str(path))
    args = [*TINY, "--group", "C4", "--methods", "canonicalized,plain", "--output-dir", str(out), "--resume"]
    code, err = _main_exit(args, capsys)
    assert code == 1 and "checksum mismatch" in err
    assert path.read_bytes() != good and not (out / "metrics.json").exists()  # nothing trained on, nothing written


def _nan_checkpoint(src, dst):
    payload = read_checkpoint(str(src))
    payload["models"]["plain"]["head.1.weight"][0, 0] = float("nan")
    torch.save({**payload, "sha256": payload_digest(payload)}, dst)  # a valid checksum over NaN weights


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"epoch 3 done\n", "not a readable checkpoint"),
        ("truncated", "not a readable checkpoint"),
        ("state_dict", "not a canon.train checkpoint"),
        ("format1", "format 1"),
        ("format1_numpy", r"refused, not loaded.*earlier version \(format 1\)"),
        ("no_checksum", "no checksum"),
        ("nan", r"NaN/Inf in \['models'\]\['plain'\]\['head.1.weight'\]"),
        ("npz", "not a readable checkpoint"),
    ],
)
def test_bad_checkpoint_files_are_refused(trained, tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    good = trained / "checkpoint.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "state_dict":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif content == "format1":
        torch.save({"format": 1, "models": {}}, path)
    elif content == "format1_numpy":  # what earlier versions wrote: numpy's RNG state, pickled
        import numpy as np

        torch.save({"format": 1, "rng": {"numpy": np.random.get_state()}}, path)
    elif content == "no_checksum":
        torch.save(read_checkpoint(str(good)), path)
    elif content == "nan":
        _nan_checkpoint(good, path)
    elif content == "npz":
        import numpy as np

        with open(path, "wb") as f:
            np.savez(f, x=np.zeros(3))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(str(path))


def test_resume_from_nan_weights_stops(trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    _nan_checkpoint(trained / "checkpoint.pt", out / "checkpoint.pt")
    code, err = _main_exit(
        [
            *TINY,
            "--group",
            "C4",
            "--methods",
            "canonicalized,plain",
            "--output-dir",
            str(out),
            "--resume",
            "--epochs",
            "2",
        ],
        capsys,
    )
    assert code == 1 and "NaN/Inf" in err and "head.1.weight" in err
    assert not (out / "metrics.json").exists()


def test_save_refuses_nonfinite_and_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(str(path), {"format": 2, "w": torch.ones(2)})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not written"):
        save_checkpoint(str(path), {"format": 2, "w": torch.tensor([1.0, float("inf")])})

    def interrupted(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), interrupted)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_stale_temporary_files_are_removed(trained, tmp_path, digits, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    for stale in ("checkpoint.pt.tmp.4242", "metrics.json.tmp.17", "epochs.csv.tmp.99999"):
        (out / stale).write_bytes(b"partial")
    (out / "notes.txt.tmp.5").write_text("not ours")
    capsys.readouterr()
    run(
        cfg_of(
            "--group", "C4", "--methods", "canonicalized,plain", "--epochs", "2", "--output-dir", str(out), "--resume"
        ),
        digits,
    )
    assert "removed temporary files left by an interrupted writer" in capsys.readouterr().out
    assert sorted(f for f in os.listdir(out) if ".tmp" in f) == ["notes.txt.tmp.5"]


# -- output folder ----------------------------------------------------------------
def test_previous_run_is_refused_unless_resume_or_overwrite(trained, tmp_path, capsys, digits):
    out = tmp_path / "run"
    run(cfg_of("--methods", "plain", "--output-dir", str(out)), digits)
    files = {f: (out / f).read_bytes() for f in os.listdir(out)}
    code, err = _main_exit([*TINY, "--methods", "plain", "--lr", "0.01", "--output-dir", str(out)], capsys)
    assert code == 1 and "holds a previous run" in err and "--overwrite" in err
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == files, "the refused run changed the folder"
    # --overwrite discards the old run: nothing of it stays beside the new one
    assert (
        run(
            cfg_of(
                "--methods",
                "plain",
                "--lr",
                "0.01",
                "--output-dir",
                str(out),
                "--overwrite",
                "--epochs",
                "2",
                "--stop-after",
                "1",
            ),
            digits,
        )
        is None
    )
    assert not (out / "metrics.json").exists()
    assert read_checkpoint(str(out / "checkpoint.pt"))["config"]["lr"] == 0.01


def test_lock_refuses_a_second_run_and_is_released(tmp_path, capsys, digits):
    out = tmp_path / "run"
    held = RunDirectory(str(out))
    try:
        code, err = _main_exit([*TINY, "--methods", "plain", "--output-dir", str(out)], capsys)
        assert code == 1 and f"in use by another run (pid {os.getpid()})" in err
        with pytest.raises(RuntimeError, match="in use by another run"):  # also past the early check
            RunDirectory(str(out), overwrite=True)
    finally:
        held.release()
    assert run(cfg_of("--methods", "plain", "--output-dir", str(out)), digits) is not None
    assert (out / LOCK_NAME).exists()
    RunDirectory(str(out), resume=True).release()  # run() released its lock


def test_lock_goes_with_a_killed_process(tmp_path):
    out = tmp_path / "run"
    code = (
        f"from canon.train.rundir import RunDirectory; d = RunDirectory({str(out)!r}); "
        "print('locked', flush=True); import time; time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            RunDirectory(str(out))
    finally:
        holder.kill()  # SIGKILL: no Python clean-up runs
        holder.wait()
    RunDirectory(str(out)).release()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu9"], "'tpu9' is not a device"),
        (["--device", "meta"], "device type 'meta'"),
        (["--device", "cpu:3"], "one CPU device"),
        (["--threads", "100000"], "--threads must be in"),
        (["--group", "C100000"], "at most 360 rotations"),
        (["--beta", "inf"], "--beta must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lambda-prior", "inf"], "--lambda-prior must be a finite number"),
        (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay must be in"),
        (["--crop-ratio", "nan"], "--crop-ratio must be a finite number"),
        (["--test-fraction", "1"], "--test-fraction must be below 1"),
        (["--encoder", "vgg"], "--encoder must be"),
        (["--encoder-kernel", "4"], "must be odd"),
        (["--encoder-width", "0"], "--encoder-width must be in"),
        pytest.param(  # the encoder is built before the folder: nothing written
            ["--encoder", "torchvision:resnet18"],
            "torchvision",
            marks=pytest.mark.skipif(
                _imports("torchvision"), reason="torchvision imports: resnet18 is a valid encoder (channel adapter)"
            ),
        ),
        (["--seed", "-1"], "--seed must be in"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_bad_options_fail_before_anything_is_written(args, message, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _main_exit([*TINY, "--output-dir", str(out), *args], capsys)
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and not out.exists()


def test_encoder_that_cannot_be_built_leaves_nothing(tmp_path, capsys, monkeypatch):
    import canon.train.loop as loop

    def unknown(*args, **kwargs):  # what torchvision_encoder raises for a model name torchvision lacks
        raise AttributeError("module 'torchvision.models' has no attribute 'resnet7'")

    monkeypatch.setattr(loop, "build_encoder", unknown)
    out = tmp_path / "o"
    code, err = _main_exit([*TINY, "--encoder", "torchvision:resnet7", "--output-dir", str(out)], capsys)
    assert code == 2 and "--encoder torchvision:resnet7: cannot build it" in err and not out.exists()


def test_output_dir_that_cannot_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for out, message in ((f, "is a file"), (f / "sub", "is a file")):
        code, err = _main_exit([*TINY, "--output-dir", str(out)], capsys)
        assert code == 1 and message in err and "Traceback" not in err
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the os.access check cannot fail")
def test_unwritable_output_dir(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _main_exit([*TINY, "--output-dir", str(ro / "run")], capsys)
    finally:
        ro.chmod(0o700)
    assert code == 1 and "not writable" in err and not (ro / "run").exists()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, a folder where nobody can create files")
def test_folder_that_cannot_be_created(tmp_path, capsys):
    code, err = _main_exit([*TINY, "--output-dir", "/sys/kernel/canon-run"], capsys)
    assert code == 1 and "cannot create the folder" in err and "Traceback" not in err


# -- non-finite training ----------------------------------------------------------
def test_loss_that_overflows_stops_training(tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _main_exit(
        [*TINY, "--methods", "canonicalized", "--lambda-prior", "1e39", "--output-dir", str(out)], capsys
    )
    assert code == 1 and "the loss of 'canonicalized' is inf" in err and "no checkpoint was written" in err
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()


def test_diverging_weights_stop_training(tmp_path, digits):
    cfg = cfg_of("--methods", "plain", "--max-steps", "20", "--output-dir", str(tmp_path / "o"))
    cfg["lr"] = 1e30  # finite, so it passes the option checks; the first steps blow the weights up
    with pytest.raises(NonFiniteError, match="the loss of 'plain' is nan|NaN/Inf in the weights"):
        run(cfg, digits)
    cfg["lr"] = float("inf")  # run() checks a configuration dict as the command line does
    with pytest.raises(ConfigError, match="--lr must be a finite number"):
        run(cfg, digits)


# -- two processes: the lock and SIGINT ---------------------------------------------
def _wait_for(path, proc, limit_s=240.0):
    end = time.monotonic() + limit_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended early (status {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no {path.name} after {limit_s} s")
        time.sleep(0.2)


@pytest.fixture
def sigint_default():
    """Python's Ctrl-C handler in force for the test, however pytest was started: a shell starts a
    background job (``pytest &``) with SIGINT ignored, Python then installs no handler, and
    SIGINT would do nothing (the run under test would never stop)."""
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, prev)


def _sigint_as_default():  # for child processes: SIGINT back to the default, so Python installs its handler
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_concurrent_run_is_refused_and_sigint_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CANON_BACKEND": "reference"}
    args = [*TINY, "--methods", "plain", "--epochs", "100000", "--max-steps", "1", "--output-dir", str(out)]
    cmd = [sys.executable, "-m", "canon.train", *args]
    first = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_default
    )
    try:
        _wait_for(out / "checkpoint.pt", first)
        second = subprocess.run(
            [*cmd[:-2], "--output-dir", str(out), "--overwrite"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert second.returncode == 1, second.stderr
        assert f"in use by another run (pid {first.pid})" in second.stderr and "Traceback" not in second.stderr
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    # one line, no traceback (other lines could only be warnings printed at start-up)
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted; the last checkpoint is") and "--resume" in lines[0]
    # the printed command resumes (one more epoch, then stop)
    hinted = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert hinted[:3] == ["python", "-m", "canon.train"]
    again = subprocess.run(
        [sys.executable, *hinted[1:], "--stop-after", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_ctrl_c_during_a_checkpoint_write_is_held_until_the_file_is_in_place(tmp_path, sigint_default):
    """SIGINT inside torch.save's zip writer came out as a RuntimeError traceback (exit 1, no resume hint);
    the write now finishes, then the interrupt is raised."""
    path = tmp_path / "checkpoint.bin"

    def write(f):
        f.write(b"a" * 1000)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal arrives in the middle of the write
        f.write(b"b" * 1000)

    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), write)
    assert path.read_bytes() == b"a" * 1000 + b"b" * 1000
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    write_atomic(str(path), lambda f: f.write(b"c"))  # no interrupt: nothing raised
    assert path.read_bytes() == b"c"


def test_a_second_ctrl_c_interrupts_the_write_at_once_and_a_failing_write_keeps_the_interrupt(tmp_path, sigint_default):
    path = tmp_path / "checkpoint.bin"
    path.write_bytes(b"previous")

    def twice(f):
        f.write(b"a")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # a hung write must stay interruptible
        time.sleep(0.05)
        raise AssertionError("not interrupted by the second Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), twice)
    assert path.read_bytes() == b"previous" and not [p for p in os.listdir(tmp_path) if ".tmp" in p]

    def interrupted_then_failing(f):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        raise OSError("disk full")

    with pytest.raises(KeyboardInterrupt) as e:
        write_atomic(str(path), interrupted_then_failing)
    assert isinstance(e.value.__cause__, OSError) and path.read_bytes() == b"previous"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
