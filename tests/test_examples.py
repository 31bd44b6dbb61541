"""The scripts in examples/ run at a tiny size (--tiny) and their built-in checks hold."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:
        return False
    return True


HAS_SKLEARN = importable("sklearn")
HAS_LIGHTNING = importable("lightning") or importable("pytorch_lightning")
needs_sklearn = pytest.mark.skipif(
    not HAS_SKLEARN, reason="the example reads scikit-learn's digits (pip install scikit-learn, in the [train] extra)"
)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_data_example_on_its_synthetic_folder():
    result = load("own_data").main(["--tiny"])
    assert result["exact_invariance"] is True


def test_own_data_example_reads_a_user_folder_of_rgb_arrays(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cats", "dogs"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(3):
                np.save(tmp_path / split / cls / f"{k}.npy", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    example = load("own_data")
    ds = example.ImageFolderDataset(tmp_path / "train")
    x, label = ds[4]
    assert ds.classes == ["cats", "dogs"] and len(ds) == 6 and label == 1
    assert x.shape == (3, 10, 10) and float(x.max()) <= 1.0
    result = example.main(["--tiny", "--data", str(tmp_path), "--group", "D4"])
    assert result["exact_invariance"] is True


def test_own_data_example_runs_as_a_script():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_data.py"), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "(logits bit for bit): True" in out.stdout


@needs_sklearn
def test_robust_classifier_example():
    result = load("robust_classifier").main(["--tiny"])
    assert result["canonicalized"]["logits_identical"] is True
    assert result["canonicalized"]["invariance_rate"] == 1.0


def test_dense_prediction_example():
    result = load("dense_prediction").main(["--tiny"])
    assert result["equivariant"] is True and result["boxes_consistent"] is True


@needs_sklearn
@pytest.mark.skipif(not HAS_LIGHTNING, reason="PyTorch Lightning is not installed (optional: pip install lightning)")
def test_lightning_example():
    metrics = load("lightning_module").main(["--tiny"])
    assert metrics["val/invariance_rate"] == 1.0
    assert {"train/prior", "train/contrastive", "train/task"} <= set(metrics)
