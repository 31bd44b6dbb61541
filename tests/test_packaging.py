"""What a user installs: the wheel holds only `canon`, imports outside the checkout, and runs without triton."""

import email
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import canon

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None


def run_python(code: str, cwd, env_extra: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CANON_BACKEND")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_one_version_source():
    text = (ROOT / "canon" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "(\d+\.\d+\.\d+[^"]*)"$', text, re.MULTILINE)
    assert match, "canon/_version.py must hold the version"
    assert canon.__version__ == match.group(1)
    for path in ("setup.py", "pyproject.toml", "canon/__init__.py"):
        assert not re.search(r"""version\s*=\s*["']\d""", (ROOT / path).read_text(encoding="utf-8")), (
            f"{path} writes a version of its own"
        )


def test_changelog_and_licence_exist():
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and "Keep a Changelog" in changelog


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources (the build writes build/ and *.egg-info where it runs)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "kernels", src / "kernels", ignore=skip)
    shutil.copytree(
        ROOT / "canon", src / "canon", symlinks=True, ignore=skip
    )  # canon/kernels stays a link to ../kernels
    # offline: the build backend (setuptools) comes from this environment, nothing is downloaded
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        ".",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(tmp / "dist"),
        "-q",
    ]
    res = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"pip wheel failed:\n{res.stdout}\n{res.stderr}"
    (path,) = (tmp / "dist").glob("*.whl")
    return path


@pytest.mark.slow
def test_wheel_installs_only_canon(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    dist_info = f"canon_equivariance-{canon.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"canon", dist_info}
    assert "canon/py.typed" in names and "canon/kernels/resample.py" in names and "canon/kernels/__init__.py" in names
    assert not any("__pycache__" in n or n.startswith(("kernels/", "bench/", "tests/")) for n in names)
    assert any(n.startswith(dist_info) and n.endswith("LICENSE") for n in names)
    assert meta["Version"] == canon.__version__
    assert "MIT" in (meta.get("License-Expression") or meta.get("License") or "")
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch") for r in requires)
    triton = [r for r in requires if r.startswith("triton")]
    assert triton and all('extra == "gpu"' in r for r in triton), f"a CPU install must not pull triton: {triton}"


@pytest.mark.slow
def test_installed_wheel_imports_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"pip install failed:\n{res.stdout}\n{res.stderr}"
    # bin/ holds the canon-train console script, not an import name
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == [
        "canon"
    ]
    code = (
        "import importlib.util, torch, canon\n"
        "print(canon.__file__)\n"
        "print(canon.__version__)\n"
        "x = torch.rand(2, 1, 8, 8)\n"
        "assert torch.equal(canon.orbit(x, 'C4')[:, 1], torch.rot90(x, 1, dims=(-2, -1)))\n"
        "if importlib.util.find_spec('triton') is not None:\n"
        "    import canon.kernels.resample\n"
        "    print(canon.kernels.resample.__file__)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_python(code, cwd=elsewhere, env_extra={"PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert Path(lines[0]).resolve().is_relative_to(target.resolve()), (
        f"canon imported from {lines[0]}, not from the installed wheel"
    )
    assert lines[1] == canon.__version__
    if HAS_TRITON:
        assert Path(lines[2]).resolve().is_relative_to(target.resolve()), lines[2]


HIDE_TRITON = "import sys\nsys.modules['triton'] = None  # import triton now fails, as on a CPU-only install\n"

WITHOUT_TRITON = (
    HIDE_TRITON
    + """
import torch, canon
from canon.networks import ConvEncoder
x = torch.rand(2, 1, 10, 10, requires_grad=True)
views = canon.orbit(x, "C8", size=8, padding="reflection")
sel = canon.select(ConvEncoder(1, 8)(views.flatten(0, 1)).unflatten(0, (2, 8)), torch.randn(8))
xc = canon.canonicalize(x, sel, "C8")
y = canon.invert(xc, sel, "C8") + canon.transform(x, 3, "C8")
boxes = canon.invert_boxes(torch.tensor([[[1.0, 1.0, 4.0, 5.0]]]).expand(2, 1, 4), sel, "C8", (10, 10))
points = canon.invert_points(torch.zeros(2, 1, 2), sel, "C8", (10, 10))
loss = y.sum() + canon.losses.contrastive_loss(views.flatten(2)) + canon.losses.prior_loss(sel.scores)
loss.backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
model = canon.Canonicalized(torch.nn.Flatten(), canon.OrbitCanonicalizer(ConvEncoder(1, 8), "D4")).eval()
with torch.no_grad():
    assert torch.equal(model(torch.rot90(x, 1, dims=(-2, -1))), model(x))
assert "canon.kernels" not in sys.modules and "canon.triton_ops" not in sys.modules
assert not canon.backend.triton_available()
for fn in (lambda: canon.use_backend("triton").__enter__(), lambda: canon.set_backend("triton")):
    try:
        fn()
    except ImportError as e:
        assert "canon-equivariance[gpu]" in str(e) and "triton" in str(e), str(e)
    else:
        raise AssertionError("asking for the triton backend without triton must raise")
print("ok")
"""
)


def test_reference_path_works_without_triton():
    out = run_python(WITHOUT_TRITON, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_canon_backend_triton_without_triton_says_how_to_install():
    code = HIDE_TRITON + "import torch, canon\ncanon.orbit(torch.rand(1, 1, 4, 4), 'C4')\n"
    out = run_python(code, cwd=ROOT, env_extra={"CANON_BACKEND": "triton"})
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: canon (CANON_BACKEND='triton'): backend 'triton' needs the triton package"), (
        last
    )
    assert "pip install 'canon-equivariance[gpu]'" in last
