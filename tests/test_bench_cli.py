"""``python -m bench`` refuses bad options and bad result files with a message (issue 12, item 9)."""

import csv

import pytest
import torch

from bench import __main__ as bench_cli
from bench.rows import COLUMNS


def _row(provider: str, median: str) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        case="orbit",
        provider=provider,
        status="ok",
        device="cpu",
        dtype="fp32",
        batch="2",
        group="C8",
        in_shape="3x32x32",
        out_shape="2x8x3x96x96",
        median_ms=median,
        q25_ms=median,
        q75_ms=median,
        cuda_graph="False",
        device_name="cpu",
        torch="2.13",
        git_commit="0123456789abcdef",
    )
    return row


def _write(path, rows, columns=None):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns or COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _exit(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        bench_cli.main(argv)
    return e.value.code, capsys.readouterr().err


def test_plot_creates_a_new_output_folder(tmp_path, capsys):
    src = _write(tmp_path / "results.csv", [_row("ours-reference", "2.0"), _row("equiadapt-loop", "9.0")])
    out = tmp_path / "new" / "figures"
    assert bench_cli.main(["plot", src, "--output-dir", str(out)]) == 0
    assert (out / "time.png").is_file() and str(out / "time.png") in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("empty", "is empty"),
        ("other", "lacks the column(s) case, provider, status"),
        ("no_ok", "no rows with status 'ok'"),
        ("not_a_number", "has median_ms='fast', not a number"),
        ("zero", "has median_ms='0': a time must be a finite number > 0"),
        ("truncated", "ends before the column(s)"),
        ("missing", "no such file"),
    ],
)
def test_plot_refuses_files_it_cannot_draw(tmp_path, capsys, content, message):
    path = tmp_path / "results.csv"
    if content == "empty":
        path.write_text("")
    elif content == "other":
        path.write_text("a,b\n1,2\n")
    elif content == "no_ok":
        _write(path, [{**_row("ours-reference", ""), "status": "error"}])
    elif content == "not_a_number":
        _write(path, [_row("ours-reference", "fast")])
    elif content == "zero":
        _write(path, [_row("ours-reference", "0")])
    elif content == "truncated":  # a copy cut off in the middle of its last row
        text = open(_write(path, [_row("ours-reference", "2.0"), _row("equiadapt-loop", "9.0")])).read()
        path.write_text(text[: text.rindex("equiadapt-loop") + 20])
    code, err = _exit(["plot", str(path), "--output-dir", str(tmp_path / "figs")], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["profile", "--batch", "0"], "--batch must be >= 1"),
        (["profile", "--threads", "100000"], "--threads must be in [1,"),
        (["profile", "--cuda-graph", "--device", "cpu"], "--cuda-graph needs --device cuda"),
        (["sweep", "--configs", "8x16"], "--configs: expected TILE_HxTILE_WxCHANNELSxWARPS"),
        (["overhead", "--device", "cpu", "--profile", "orbit, spin"], "--profile: unknown ops ['spin']"),
        (["overhead", "--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--threads", "100000"], "--threads must be in [1,"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--min-time", "nan"], "--min-time must be a finite number"),
        (["--min-time", "-1"], "--min-time must be a finite number"),
        (["--modes", "forward,sideways"], "unknown modes ['sideways']"),
        (["--cases", "orbit,spin"], "unknown cases ['spin']"),
        (["--providers", "theirs"], "unknown providers ['theirs']"),
        (["kernels", "--archs", "abc"], "--archs must be comma-separated SM versions"),
        (["kernels", "--archs", "80,5"], "--archs: [5] are not CUDA SM versions"),
    ],
)
def test_bad_bench_options(argv, message, tmp_path, capsys):
    code, err = _exit([*argv, "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sub", [[], ["profile"]])
def test_output_dir_that_is_a_file(tmp_path, capsys, sub):
    f = tmp_path / "f"
    f.write_text("x")
    code, err = _exit([*sub, "--output-dir", str(f)], capsys)
    assert code == 2 and "is a file" in err and f.read_text() == "x"


def test_overhead_table_and_profile_on_the_cpu(tmp_path, capsys):
    """``python -m bench overhead``: every op gets public, bare and overhead figures; ``--profile`` adds
    a cProfile of the named ops' public and bare calls; an unknown op name is refused by name."""
    import json

    from bench import overhead

    out = tmp_path / "o"
    assert overhead.main(["--device", "cpu", "--calls", "3", "--output-dir", str(out), "--profile", "orbit"]) == 0
    rows = json.loads((out / "overhead.json").read_text())["rows"]
    names = [r["op"] for r in rows]
    assert "orbit" in names and "OrbitCanonicalizer eval forward" in names and len(names) == len(set(names))
    for r in rows:
        assert r["public_us"] > 0 and r["bare_us"] > 0
        assert r["overhead_us"] == pytest.approx(r["public_us"] - r["bare_us"], abs=0.02)
    text = (out / "profile.txt").read_text()
    assert "## orbit: public call" in text and "## orbit: bare call" in text and "canon/functional.py" in text
    with pytest.raises(ValueError, match=r"unknown ops \['spin'\]"):
        overhead.profile_ops("cpu", ["spin"], 1)


def test_overhead_triton_launcher_columns_and_switch():
    """On CUDA the table adds the public and bare times through Triton's own launcher; the switch used for
    them is set only during the call, also when the call raises."""
    from bench import overhead
    from canon.kernels import launch

    row = dict(op="orbit", public_us=30.0, bare_us=20.0, overhead_us=10.0, torch_add_us=8.0)
    rows = [
        dict(row, public_triton_launcher_us=90.0, bare_triton_launcher_us=80.0),
        dict(row, op="OrbitCanonicalizer eval forward", public_triton_launcher_us=150.0, bare_triton_launcher_us=None),
    ]
    lines = overhead.format_rows(rows).splitlines()
    assert "Triton launcher" in lines[0]
    assert lines[2].split()[-2:] == ["90.0", "80.0"] and lines[3].split()[-2:] == ["150.0", "-"]
    seen = []
    assert overhead._through_triton(lambda: seen.append(launch._stock) or 7)() == 7
    with pytest.raises(ZeroDivisionError):
        overhead._through_triton(lambda: 1 / 0)()
    assert seen == [True] and launch._stock is False


@pytest.mark.parametrize("sub", [[], ["profile"], ["overhead", "--calls", "1", "--repeats", "1"]])
def test_output_dir_that_cannot_be_created(tmp_path, capsys, sub):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _exit([*sub, "--output-dir", str(blocker / "sub")], capsys)
    assert code == 2 and "cannot create the folder" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_profile_of_a_provider_that_cannot_run_here(tmp_path, capsys):
    code, err = _exit(
        ["profile", "--provider", "ours-triton", "--device", "cpu", "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "--provider ours-triton on cpu: no CUDA device here" in err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        bench_cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"\n  {sub} " in out for sub in ("profile", "sweep", "overhead", "kernels", "plot"))


def test_rows_not_timed_are_summed_up_by_reason():
    rows = [
        dict(provider="ours-triton", status="unavailable", note="no CUDA device here"),
        dict(provider="ours-triton", status="unavailable", note="no CUDA device here"),
        dict(provider="equiadapt-loop", status="error", note="NotImplementedError: bf16"),
        dict(provider="ours-reference", status="ok", note=""),
    ]
    assert bench_cli.not_timed_summary(rows) == [
        "# 2 row(s) unavailable, ours-triton: no CUDA device here",
        "# 1 row(s) error, equiadapt-loop: NotImplementedError: bf16",
    ]
