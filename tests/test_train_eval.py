"""Issue 11 in canon.train: accuracy every 15°, collapse statistics, the canonicalizer's cost, the
elpv dataset option, and the training loop on canon.Canonicalized / backbone_encoder (issue 10)."""

import importlib.util
import re
import sys
from functools import partial

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, train_config

import canon
from canon.data import ImageData, elpv_classes, load_dataset, load_elpv, resize_images
from canon.train import build_parser, main, run
from canon.train.cli import _check_resume
from canon.train.config import ADDED_DEFAULTS, ConfigError, validate
from canon.train.evaluate import (
    PARALLEL_COS,
    TIE_GAP,
    angle_accuracy,
    canonicalizer_cost,
    collapse_statistics,
    evaluate,
)
from canon.train.loop import build_models

TINY = list(TINY_TRAIN)
HAS_ELPV = importlib.util.find_spec("elpv_dataset") is not None


cfg_of = partial(train_config, TINY)


# -- accuracy every 15 degrees ------------------------------------------------------
def test_angle_accuracy_agrees_with_the_group_evaluation(digits):
    _, test = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    for group, step in (("C4", 15), ("D4", 45)):
        G = canon.as_group(group)
        per = evaluate({"plain": model}, test, G, "cpu", 128)["plain"]["per_element_acc"]
        m = angle_accuracy({"plain": model}, test, G, step, "cpu", 128)["plain"]
        t = m["angle_acc"]
        assert t["angles_deg"] == list(range(0, 360, step))
        q = 90 // step  # quarter turns are exact pixel permutations in both evaluations
        assert [t["acc"][k * q] for k in range(4)] == per[:4]
        everything = t["acc"] + t.get("flipped_acc", [])
        assert len(everything) == (2 if G.reflections else 1) * 360 // step
        assert m["angle_avg_acc"] == pytest.approx(np.mean(everything), abs=1e-12)
        if G.reflections:
            assert [t["flipped_acc"][k * q] for k in range(4)] == per[4:]
    # 15° copies are different inputs: a non-invariant model does not score the same on all of them
    assert len({round(a, 6) for a in m["angle_acc"]["acc"]}) > 2
    with torch.no_grad():  # direct count at 30°
        x30 = canon.transform(test.x, 2, canon.as_group("C24"))
        direct = float((model(x30).argmax(1) == test.y).double().mean())
    assert angle_accuracy({"plain": model}, test, canon.as_group("C4"), 15, "cpu", 1000)["plain"]["angle_acc"]["acc"][
        2
    ] == pytest.approx(direct, abs=1e-12)
    with pytest.raises(ValueError, match="divisor of 360"):
        angle_accuracy({"plain": model}, test, canon.as_group("C4"), 7, "cpu", 128)


def test_metrics_json_has_angles_for_every_method_and_the_plot_is_drawn(tmp_path, digits):
    res = run(
        cfg_of("--group", "D2", "--angle-step", "30", "--output-dir", str(tmp_path)).copy() | {"no_plots": False},
        digits,
    )
    for name, m in res["methods"].items():
        assert len(m["angle_acc"]["acc"]) == 12 and len(m["angle_acc"]["flipped_acc"]) == 12, name
        assert 0.0 <= m["angle_avg_acc"] <= 1.0 and 0.0 <= m["angle_invariance_rate"] <= 1.0
    import matplotlib.pyplot as plt

    img = plt.imread(tmp_path / "accuracy_vs_angle.png")
    assert img.shape[0] > 300 and float(img.std()) > 0.05
    off = run(
        cfg_of("--group", "C4", "--angle-step", "0", "--methods", "plain", "--output-dir", str(tmp_path / "off")),
        digits,
    )
    assert "angle_acc" not in off["methods"]["plain"]


# -- collapse statistics -------------------------------------------------------------
class FixedVectors(torch.nn.Module):
    """An encoder whose vector depends only on the view's mean brightness pattern, scaled by ``spread``."""

    def __init__(self, spread: float):
        super().__init__()
        self.spread, self.out_dim = spread, 4
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, v):
        # left-right and top-bottom brightness differences: different per orbit copy of an asymmetric image
        h, w = v.shape[-2:]
        a = v[..., :, : w // 2].mean((1, 2, 3)) - v[..., :, w // 2 :].mean((1, 2, 3))
        b = v[..., : h // 2, :].mean((1, 2, 3)) - v[..., h // 2 :, :].mean((1, 2, 3))
        one = torch.ones_like(a)
        return torch.stack([one, self.spread * a, self.spread * b, 0 * one], 1) + 0 * self.w


def test_collapse_statistics_tell_collapsed_from_spread_orbits():
    x = torch.zeros(6, 1, 8, 8)
    x[:, :, :4, :2] = 1.0  # a bright block in the top-left corner: every quarter turn moves it
    data = ImageData(x, torch.zeros(6, dtype=torch.int64), 2)
    predictor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    stats = {}
    for spread in (0.0, 1e-4, 10.0):
        can = canon.OrbitCanonicalizer(FixedVectors(spread), "C4", seed=1)
        stats[spread] = collapse_statistics(canon.Canonicalized(predictor, can), data, "cpu", 4)
    # identical vectors: every orbit collapsed, every choice a tie
    assert (
        stats[0.0]["parallel_orbit_rate"] == 1.0
        and stats[0.0]["score_tie_rate"] == 1.0
        and stats[0.0]["mean_pair_cos"] == pytest.approx(1.0)
    )
    # nearly identical: still parallel (cos > 0.99) and tied (gap < 1e-3)
    assert (
        stats[1e-4]["parallel_orbit_rate"] == 1.0
        and stats[1e-4]["score_tie_rate"] == 1.0
        and stats[1e-4]["median_score_gap"] < TIE_GAP
    )
    # spread out: no orbit collapsed, the best copy wins clearly
    assert stats[10.0]["parallel_orbit_rate"] == 0.0 and stats[10.0]["score_tie_rate"] == 0.0
    assert stats[10.0]["mean_pair_cos"] < PARALLEL_COS and stats[10.0]["median_score_gap"] > TIE_GAP


def test_canonicalizer_cost_counts_parameters_and_clears_gradients(digits):
    train, _ = digits
    cfg = cfg_of("--group", "C4", "--methods", "canonicalized")
    model = build_models(cfg, 1, 10, (8, 8))["canonicalized"]
    cost = canonicalizer_cost(model, train.x[:16], repeats=2, warmup=1)
    assert cost["canonicalizer_params"] == sum(p.numel() for p in model.canonicalizer.parameters()) > 0
    assert cost["predictor_params"] == sum(p.numel() for p in model.predictor.parameters())
    assert cost["canonicalizer_step_ms"] > 0
    assert all(p.grad is None for p in model.parameters())


# -- the loop on canon.Canonicalized, encoders from backbones (issue 10) --------------
def test_models_are_canon_canonicalized_with_the_cli_weights():
    cfg = cfg_of("--group", "C4", "--lambda-prior", "0.5", "--lambda-contrastive", "0.25", "--lambda-artifact", "0.125")
    ours = build_models(cfg, 1, 10, (8, 8))["canonicalized"]
    assert isinstance(ours, canon.Canonicalized)
    assert (ours.prior_weight, ours.contrastive_weight, ours.artifact_weight) == (0.5, 0.25, 0.125)
    # checkpoint keys of the former CanonicalizedClassifier: canonicalizer.* and predictor.*
    assert {k.split(".")[0] for k in ours.state_dict()} == {"canonicalizer", "predictor"}
    assert "canonicalizer.encoder.head.weight" in ours.state_dict() and "canonicalizer.reference" in ours.state_dict()


def test_backbone_encoders_get_the_data_channels_and_view_size(monkeypatch):
    import canon.networks

    seen = {}

    def fake(name, out_dim=None, in_channels=3, **kwargs):
        seen.update(name=name, out_dim=out_dim, in_channels=in_channels, **kwargs)
        return canon.networks.ConvEncoder(in_channels, out_dim=out_dim, hidden=2)

    monkeypatch.setattr(canon.networks, "backbone_encoder", fake)
    cfg = cfg_of(
        "--group",
        "C4",
        "--methods",
        "canonicalized",
        "--encoder",
        "timm:resnet18",
        "--encoder-dim",
        "12",
        "--view-size",
        "8",
    )
    build_models(cfg, 1, 10, (8, 8))
    assert seen == {"name": "timm:resnet18", "out_dim": 12, "in_channels": 1, "input_size": 8}


@pytest.mark.skipif(
    importlib.util.find_spec("timm") is not None,
    reason="timm is installed: the missing-package message cannot be shown",
)
def test_missing_timm_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*TINY, "--encoder", "timm:resnet18", "--output-dir", str(tmp_path / "o")])
    assert e.value.code == 2 and "timm did not import" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--angle-step", "7"], "--angle-step must divide 360"),
        (["--image-size", "-1"], "--image-size must be in"),
        (["--eq-hidden", "0"], "--eq-hidden must be in"),
        (["--methods", "equivariant", "--group", "C1"], "at least 2 elements"),
        (["--encoder", "timm:"], "--encoder must be"),
    ],
)
def test_new_options_are_checked(args, message):
    with pytest.raises(ConfigError, match=message):
        cfg_of(*args)


def test_checkpoints_from_before_the_new_options_still_resume():
    new = cfg_of("--group", "C4")
    old = {k: v for k, v in new.items() if k not in ADDED_DEFAULTS}
    _check_resume(old, new)  # the missing options mean their defaults: no refusal
    with pytest.raises(ConfigError, match="image_size"):
        _check_resume(old, {**new, "image_size": 12})
    assert validate(dict(old))["angle_step"] == 15


# -- elpv -----------------------------------------------------------------------------
def test_elpv_classes_from_defect_probabilities():
    assert elpv_classes([0.0, 1 / 3, 2 / 3, 1.0, 0.5]).tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        elpv_classes([0.0, 1.5])
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        elpv_classes([np.nan])


def test_resize_images_keeps_range_and_refuses_bad_sizes():
    x = torch.rand(3, 1, 30, 30)
    y = resize_images(x, 10)
    assert y.shape == (3, 1, 10, 10) and 0 <= float(y.min()) and float(y.max()) <= 1
    assert resize_images(x, 30) is x
    assert float((resize_images(torch.ones(1, 1, 9, 9), 4) - 1).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        resize_images(x, 0)


def test_missing_elpv_names_the_extra_and_the_licence(monkeypatch):
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    with pytest.raises(ImportError, match=r"CC-BY-NC-SA 4\.0.*canon-equivariance\[elpv\]"):
        load_elpv()


@pytest.fixture(scope="module")
def elpv16():
    if not HAS_ELPV:
        pytest.skip("elpv-dataset is not installed (pip install 'canon-equivariance[elpv]')")
    return load_dataset("elpv", 0.2, 0, image_size=16)


def test_elpv_loads_resized_with_a_stratified_split(elpv16):
    train, test = elpv16
    assert len(train) + len(test) == 2624 and train.num_classes == test.num_classes == 2
    assert train.x.shape[1:] == (1, 16, 16) and train.x.dtype == torch.float32
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0 and float(train.x.std()) > 0.05
    counts = torch.cat([train.y, test.y]).bincount().tolist()
    assert counts == [1803, 821]  # 1,508 + 295 cells below 0.5, 106 + 715 at 2/3 and 1
    assert abs(test.y.float().mean().item() - train.y.float().mean().item()) < 0.01  # stratified


def test_elpv_trains_with_c4_and_d4(tmp_path, elpv16):
    for group in ("C4", "D4"):
        args = [
            "--dataset",
            "elpv",
            "--image-size",
            "16",
            "--group",
            group,
            "--methods",
            "canonicalized,plain",
            "--angle-step",
            "90",
        ]
        res = run(cfg_of(*args, "--output-dir", str(tmp_path / group)), elpv16)
        ours = res["methods"]["canonicalized"]
        assert ours["invariance_rate"] == 1.0 and ours["canonical_consistency"] == 1.0
        assert len(ours["per_element_acc"]) == canon.as_group(group).order


# -- the report tool that prints the docs' tables ------------------------------------------
def test_report_prints_the_tables_of_finished_runs(tmp_path, digits, capsys):
    from canon.train import report

    outs = []
    for lc in ("0", "1"):
        out = tmp_path / f"lc{lc}"
        run(
            cfg_of(
                "--group",
                "C4",
                "--methods",
                "canonicalized,plain",
                "--lambda-contrastive",
                lc,
                "--angle-step",
                "90",
                "--output-dir",
                str(out),
            ),
            digits,
        )
        outs.append(str(out))
    capsys.readouterr()
    report.main(outs)
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| digits, C4 | 0 | ours (optimized) |")
    ours = report.load_run(outs[0])["metrics"]["methods"]["canonicalized"]
    assert (
        f"| {100 * ours['group_avg_acc']:.1f}% |" in table[2] and "ms |" in table[2] and table[3].endswith("| – | – |")
    )
    report.main(["--collapse", *outs])
    collapse = capsys.readouterr().out.splitlines()
    assert (
        collapse[0].startswith("| lambda_contrastive | group-average acc")
        and collapse[2].startswith("| 0.0 |")
        and collapse[3].startswith("| 1.0 |")
    )
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "missing")])
    assert "no metrics.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, hidden, extra",
    [
        (["--methods", "equivariant"], ("e2cnn",), r"canon-equivariance\[equivariant\]"),
        (["--dataset", "elpv"], ("elpv_dataset", "elpv_dataset.utils"), r"canon-equivariance\[elpv\]"),
    ],
)
def test_missing_optional_packages_stop_the_command_with_the_extra(args, hidden, extra, tmp_path, capsys, monkeypatch):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SystemExit) as e:
        main([*TINY, *args, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(extra, err) and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_model_answering_one_class_is_flagged_degenerate():
    from canon.train.cli import format_table
    from canon.train.evaluate import evaluate

    class OneClass(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 1.0, 0.0]).expand(x.shape[0], 3)  # always class 1

    test = ImageData(torch.rand(20, 1, 8, 8), torch.arange(20) % 3, 3)
    m = evaluate({"plain": OneClass()}, test, canon.as_group("C4"), "cpu", 8)["plain"]
    assert m["invariance_rate"] == 1.0  # trivially: the reason for the flag
    assert m["degenerate"] is True and m["majority_prediction"] == {"class": 1, "share": 1.0}
    table = format_table({"plain": m}, "C4")
    assert "plain (degenerate*)" in table and "predicts class 1 for 100.0% of the upright test images" in table


def test_every_training_option_says_what_it_does():
    helpless = [a.option_strings[0] for a in build_parser()._actions if a.option_strings and not a.help]
    assert helpless == []
