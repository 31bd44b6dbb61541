"""``torchrun --nproc_per_node=2 -m canon.train`` on CPU (gloo): ranks end with identical parameters."""

import json
import os
import subprocess
import sys

import pytest
import torch

from canon.data import load_dataset
from canon.groups import as_group
from canon.train import CanonicalizedClassifier, build_parser, load_checkpoint, resolve
from canon.train.cli import param_digest
from canon.train.evaluate import evaluate
from canon.train.loop import build_models

ARGS = [
    "--dataset",
    "digits",
    "--group",
    "C4",
    "--epochs",
    "1",
    "--max-steps",
    "3",
    "--batch-size",
    "32",
    "--methods",
    "canonicalized,plain",
    "--no-plots",
    "--quiet",
    "--device",
    "cpu",  # two gloo ranks, also on a machine with one GPU
]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_cpu_ranks_agree(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CANON_BACKEND": "reference"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "canon.train",
        *ARGS,
        "--output-dir",
        str(out),
    ]
    proc = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    digests = metrics["rank_param_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1], digests
    # the checkpoint rank 0 wrote holds those parameters, and they moved away from the initialisation
    m = load_checkpoint(str(out / "checkpoint.pt"))
    cfg = resolve(build_parser().parse_args([*ARGS, "--output-dir", str(out)]))
    init = build_models(cfg, 1, 10, (8, 8))
    assert param_digest(m.plain) == digests[0]["plain"] != param_digest(init["plain"])
    info = json.loads((out / "config.json").read_text())
    assert info["environment"]["world_size"] == 2
    # each rank saw half the data: 3 steps of 32 per rank
    assert info["environment"]["steps_per_epoch_per_process"] == 3
    # metrics reduced across ranks equal a single-process evaluation of the saved models
    _, test = load_dataset("digits", 0.2, 0)
    models = {"canonicalized": CanonicalizedClassifier(m.canonicalizer, m.predictor), "plain": m.plain}
    single = evaluate(models, test, as_group("C4"), "cpu", 500)
    for name in ("canonicalized", "plain"):
        assert single[name]["per_element_acc"] == pytest.approx(metrics["methods"][name]["per_element_acc"], abs=1e-12)
    assert metrics["methods"]["canonicalized"]["invariance_rate"] == 1.0
