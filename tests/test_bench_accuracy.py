"""``python -m bench accuracy``: the job it reports for canon is canon.train's own run, equiadapt's recipe
trains and is evaluated alike, and bad options are refused before any training."""

from __future__ import annotations

import json

import pytest
import torch

from bench import accuracy
from canon.train.cli import load_data

# scikit-learn's 8×8 digits, two steps of one epoch: the recipes run, not converge
SMALL = ["--dataset", "digits", "--max-steps", "2", "--batch-size", "16", "--group", "C4"]


@pytest.fixture(scope="module")
def small():
    cfg = accuracy.job_config(SMALL, epochs=1, device="cpu", threads=1)
    return cfg, load_data(cfg)


def test_ours_is_the_canon_train_run(small, tmp_path):
    """The ``ours`` row is ``canon.train.run`` of the canonicalized method: same accuracy, same throughput count."""
    from canon.train import run

    cfg, data = small
    got = accuracy.train_ours(cfg, data)
    direct = run(dict(cfg, methods=["canonicalized"], output_dir=str(tmp_path), quiet=True, no_plots=True), data)
    assert got["group_avg_acc"] == direct["methods"]["canonicalized"]["group_avg_acc"]
    assert got["upright_acc"] == direct["methods"]["canonicalized"]["upright_acc"]
    assert got["train_images_per_s"] > 0 and got["train_seconds"] > 0


def test_equiadapt_recipe_trains_and_repeats(small):
    """The loop of equiadapt's layer changes the encoder's weights, repeats itself bit for bit under the
    same seed, and is evaluated as a plain model (no canon-only metrics, since it keeps no chosen elements)."""
    cfg, data = small
    a = accuracy.train_equiadapt("equiadapt-loop", cfg, data, "cpu")
    b = accuracy.train_equiadapt("equiadapt-loop", cfg, data, "cpu")
    assert a["per_element_acc"] == b["per_element_acc"]
    assert len(a["per_element_acc"]) == 4 and 0.0 <= a["group_avg_acc"] <= 1.0
    assert "orientation_acc" not in a


def test_equiadapt_layer_sees_what_equiadapt_sees(small):
    """Grayscale images are scored at full size (equiadapt crops and resizes colour inputs only), with one
    prior toward the identity: the prior loss is the cross-entropy of the activations against element 0."""
    from canon.networks import ConvEncoder

    cfg, _ = small
    torch.manual_seed(0)
    layer = accuracy.equiadapt_layer("equiadapt-loop", cfg, ConvEncoder(1, out_dim=cfg["encoder_dim"]), (1, 8, 8), 8)
    x = torch.rand(3, 1, 8, 8)
    layer.train()
    layer(x)
    acts = layer.info["group_activations"]
    assert acts.shape == (3, 4)
    want = torch.nn.functional.cross_entropy(acts, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(layer.get_prior_regularization_loss(), want)
    assert layer.group_augment(layer.scoring_view(x)).shape == (12, 1, 8, 8)
    with pytest.raises(ValueError, match="provider"):
        accuracy.equiadapt_layer("ours", cfg, ConvEncoder(1, out_dim=8), (1, 8, 8), 8)


def test_cli_writes_both_rows(tmp_path, capsys):
    out = tmp_path / "acc"
    argv = ["--epochs", "1", "--threads", "1", "--device", "cpu", "--output-dir", str(out), "--", *SMALL]
    assert accuracy.main(argv) == 0
    info = json.loads((out / "accuracy.json").read_text())
    assert [r["provider"] for r in info["rows"]] == ["ours", "equiadapt-loop"]
    assert info["job"].startswith("--epochs 1 --dataset digits")
    table = (out / "accuracy.md").read_text()
    assert "| ours | 0 |" in table and "| equiadapt-loop | 0 |" in table
    assert "C4-average" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--providers", "ours,nope"], "unknown"),
        (["--providers", ","], "empty"),
        (["--seeds", "a"], "integers"),
        (["--epochs", "0"], ">= 1"),
        (["--", "--group", "Q3"], "job's options"),
        (["--", "--batch-size", "0"], "job's options"),
    ],
)
def test_cli_refuses_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        accuracy.main(["--device", "cpu", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
