"""The training command end to end on tiny budgets (scikit-learn digits, few steps)."""

import csv
import json
import os
from functools import partial

import numpy as np
import pytest
import torch
from conftest import train_config

from canon.train import build_parser, load_checkpoint, main, resolve, run
from canon.train.cli import param_digest
from canon.train.evaluate import CONSISTENCY_TOL, evaluate, same_images
from canon.train.loop import build_models

TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--max-steps",
    "4",
    "--batch-size",
    "32",
    "--threads",
    "1",
    "--quiet",
    "--eval-batch-size",
    "200",
    "--device",
    "cpu",  # the loop's logic, also on a GPU machine (bit-for-bit resume needs deterministic kernels)
]
FRACTIONS = ("upright_acc", "group_avg_acc", "invariance_rate")


cfg_of = partial(train_config, TINY)


@pytest.fixture(scope="module")
def c4_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("c4")
    result = run(cfg_of("--group", "C4", "--epochs", "2", "--output-dir", str(out)), digits)
    return out, result


def test_outputs_and_metric_ranges(c4_run):
    out, result = c4_run
    for f in (
        "config.json",
        "metrics.json",
        "epochs.csv",
        "checkpoint.pt",
        "accuracy_vs_angle.png",
        "canonical_grid.png",
    ):
        assert (out / f).is_file(), f"{f} missing"
    assert not [f for f in os.listdir(out) if ".tmp" in f], "temporary files left behind"
    import matplotlib.pyplot as plt

    grid = plt.imread(out / "canonical_grid.png")
    assert grid.ndim == 3 and min(grid.shape[:2]) > 50 and float(grid.std()) > 0.05
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == result["methods"] and metrics["wall_time_s"] > 0
    assert set(metrics["methods"]) == {"canonicalized", "plain", "augmented"}
    for name, m in metrics["methods"].items():
        assert len(m["per_element_acc"]) == 4
        assert all(0.0 <= v <= 1.0 for v in [*m["per_element_acc"], *(m[k] for k in FRACTIONS)]), name
        assert m["upright_acc"] == m["per_element_acc"][0]
        assert abs(m["group_avg_acc"] - np.mean(m["per_element_acc"])) < 1e-12
    ours = metrics["methods"]["canonicalized"]
    assert 0.0 <= ours["identity_metric"] <= 1.0 and ours["consistency_comparison"] == "exact"
    # C4 on square images is exact: eval-mode canonicalization is invariant whatever was learnt
    assert (
        ours["invariance_rate"] == 1.0
        and ours["canonical_consistency"] == 1.0
        and ours["orientation_consistency"] == 1.0
    )
    assert len(set(ours["per_element_acc"])) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["group"] == "C4" and config["config"]["lambda_prior"] == 1.0
    rows = list(csv.DictReader(open(out / "epochs.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["canonicalized_contrastive"]) >= 0


def test_load_checkpoint_gives_working_modules(c4_run, digits):
    out, result = c4_run
    m = load_checkpoint(str(out / "checkpoint.pt"))
    assert m.epoch == 2 and m.config["group"] == "C4" and not m.canonicalizer.training
    _, test = digits
    with torch.no_grad():
        acc = float((m.predictor(m.canonicalizer(test.x)).argmax(1) == test.y).double().mean())
        rot = float(
            (m.predictor(m.canonicalizer(torch.rot90(test.x, 1, dims=(-2, -1)))).argmax(1) == test.y).double().mean()
        )
        plain = float((m.plain(test.x).argmax(1) == test.y).double().mean())
    assert acc == pytest.approx(result["methods"]["canonicalized"]["upright_acc"], abs=1e-9)
    assert rot == acc
    assert plain == pytest.approx(result["methods"]["plain"]["upright_acc"], abs=1e-9)


def test_resume_is_bit_for_bit(tmp_path, digits):
    common = [
        "--group",
        "C8",
        "--epochs",
        "3",
        "--methods",
        "canonicalized,plain",
        "--no-plots",
        "--lambda-artifact",
        "0.1",
    ]
    full = run(cfg_of(*common, "--output-dir", str(tmp_path / "a")), digits)
    assert run(cfg_of(*common, "--output-dir", str(tmp_path / "b"), "--stop-after", "1"), digits) is None
    assert load_checkpoint(str(tmp_path / "b" / "checkpoint.pt")).epoch == 1
    resumed = run(cfg_of(*common, "--output-dir", str(tmp_path / "b"), "--resume"), digits)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for name in ("canonicalized", "plain"):
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), f"{name}.{k} differs after resume"
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    drop = ("seconds", "train_seconds", "images_per_s")  # timings
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["history"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in b["history"]
    ]
    assert full["methods"] == resumed["methods"]
    # the comparison is not vacuous: training moved every model away from its initialisation
    init = build_models(resolve(build_parser().parse_args([*TINY, *common])), 1, 10, (8, 8))
    assert all(not torch.equal(v, a["models"]["plain"][k]) for k, v in init["plain"].state_dict().items())
    assert not torch.equal(
        init["canonicalized"].canonicalizer.encoder.head.weight,
        a["models"]["canonicalized"]["canonicalizer.encoder.head.weight"],
    )


def test_resume_refuses_changed_options(tmp_path, digits, capsys):
    common = ["--group", "C4", "--methods", "plain", "--no-plots", "--output-dir", str(tmp_path)]
    run(cfg_of(*common), digits)
    with pytest.raises(ValueError, match="lr=0.003"):
        run(cfg_of(*common, "--resume", "--lr", "0.01"), digits)
    # training longer is allowed, but it changes the learning-rate schedule: say so
    epochs = int(load_checkpoint(str(tmp_path / "checkpoint.pt")).config["epochs"])
    capsys.readouterr()
    run(cfg_of(*common, "--resume", "--epochs", str(epochs + 1)), digits)
    assert "warning: --resume with different epochs" in capsys.readouterr().err
    # fewer epochs than trained is refused before config.json is rewritten to claim them
    config = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError, match=f"--epochs 1 is fewer than the {epochs + 1} epochs the checkpoint has"):
        run(cfg_of(*common, "--resume", "--epochs", "1"), digits)
    assert (tmp_path / "config.json").read_bytes() == config


def test_d4_is_exactly_invariant_and_bf16_autocast_runs(tmp_path, digits):
    res = run(
        cfg_of(
            "--group", "D4", "--methods", "canonicalized", "--amp", "bf16", "--no-plots", "--output-dir", str(tmp_path)
        ),
        digits,
    )
    ours = res["methods"]["canonicalized"]
    assert len(ours["per_element_acc"]) == 8
    assert ours["invariance_rate"] == 1.0 and ours["canonical_consistency"] == 1.0


def test_loss_terms_reach_the_canonicalizer(tmp_path, digits):
    # the prior on augmented inputs teaches the canonicalizer to pick the copy that undoes the
    # augmentation; without it nothing ties the choice to the upright orientation
    args = [
        "--group",
        "C4",
        "--methods",
        "canonicalized",
        "--no-plots",
        "--epochs",
        "3",
        "--max-steps",
        "0",
        "--batch-size",
        "64",
    ]
    with_prior = run(cfg_of(*args, "--output-dir", str(tmp_path / "p")), digits)["methods"]["canonicalized"]
    no_prior = run(cfg_of(*args, "--lambda-prior", "0", "--output-dir", str(tmp_path / "n")), digits)["methods"][
        "canonicalized"
    ]
    assert with_prior["identity_metric"] > 0.8
    assert with_prior["orientation_acc"] > no_prior["orientation_acc"] + 0.2


def test_same_images_tolerance():
    a = torch.zeros(3, 1, 4, 4)
    a[:, 0, 1:3, 1:3] = 1.0
    b = a.clone()
    b[1] *= 1 - CONSISTENCY_TOL / 2  # small change: agrees up to the tolerance, not exactly
    b[2] = torch.roll(a[2], 2, dims=-1)  # moved: disagrees
    assert same_images(b, a, exact=False).tolist() == [True, True, False]
    assert same_images(b, a, exact=True).tolist() == [True, False, False]


def test_evaluate_counts_match_a_direct_computation(digits):
    _, test = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    m = evaluate({"plain": model}, test, __import__("canon").as_group("C4"), "cpu", 100)["plain"]
    with torch.no_grad():
        preds = torch.stack([model(torch.rot90(test.x, k, dims=(-2, -1))).argmax(1) for k in range(4)])
    assert m["per_element_acc"] == pytest.approx([(p == test.y).double().mean().item() for p in preds], abs=1e-12)
    assert m["invariance_rate"] == pytest.approx((preds == preds[0]).all(0).double().mean().item(), abs=1e-12)


def test_checksum_changes_with_any_parameter():
    model = torch.nn.Linear(3, 2)
    before = param_digest(model)
    with torch.no_grad():
        model.bias[0] += 1e-7
    assert param_digest(model) != before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "plain,fancy"], "unknown method"),
        (["--augment-prob", "1.5"], "augment-prob"),
        (["--epochs", "0"], "epochs"),
        (["--group", "E3"], "group"),
        (["--dataset", "/nonexistent/data.npz"], "does not exist"),
        (["--cuda-graph", "--device", "cpu"], "--cuda-graph needs a CUDA device, but --device is cpu"),
        (["--cuda-graph", "--methods", "plain"], "--methods leaves it out"),
        (["--cuda-graph", "--amp", "bf16"], "float32 only"),
        (["--cuda-graph", "--lambda-artifact", "0.1"], "artifact loss"),
    ],
)
def test_bad_options_fail_fast(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([*TINY, "--output-dir", str(tmp_path / "o"), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_graph_without_a_gpu_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*TINY, "--device", "auto", "--cuda-graph", "--output-dir", str(tmp_path / "o")])  # auto finds the CPU
    assert e.value.code == 2 and "--cuda-graph needs a CUDA device; this run's device is cpu" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cuda_graph_plumbing_follows_the_eager_run(digits, monkeypatch):
    """The trainer's --cuda-graph path on the CPU, with a stand-in for the graph that runs eagerly and
    disturbs every weight while "capturing": the run must equal the eager run bit for bit (capture
    side effects undone), replay every full batch and run the partial last batch eagerly. The real
    graph is checked against eager training in tests/test_gpu.py (CUDA only)."""
    import canon.graphs
    from canon.train.loop import Trainer

    calls = {"captured": 0, "replayed": 0}

    class CaptureStandIn:
        def __init__(self, can, sample):
            calls["captured"] += 1
            self.can, self.shape = can, sample.shape
            with torch.no_grad():
                for _ in range(3):  # warm-up forwards, as make_graphed_callables runs them
                    can(sample)
                for v in can.state_dict().values():
                    v.add_(1.0)
            torch.rand(7)  # consumes random numbers

        def __call__(self, x):
            assert x.shape == self.shape
            calls["replayed"] += 1
            return self.can(x)

    monkeypatch.setattr(canon.graphs, "GraphedCanonicalizer", CaptureStandIn)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: torch.get_rng_state())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: torch.set_rng_state(state))
    args = ("--group", "C4", "--methods", "canonicalized,plain", "--max-steps", "0", "--batch-size", "100")
    trainers, rng_after = [], []
    for graphed in (False, True):
        t = Trainer(cfg_of(*args, "--output-dir", "unused"), digits[0], torch.device("cpu"))
        t.cfg["cuda_graph"] = graphed  # past the constructor's CUDA check
        torch.manual_seed(5)
        t.train_epoch()
        trainers.append(t)
        rng_after.append(torch.get_rng_state())  # travels in the checkpoint
    full, rest = divmod(len(digits[0]), 100)
    assert rest > 0 and calls == {"captured": 1, "replayed": full}
    assert torch.equal(rng_after[0], rng_after[1])
    for (k, a), b in zip(
        trainers[0].raw["canonicalized"].state_dict().items(), trainers[1].raw["canonicalized"].state_dict().values()
    ):
        assert torch.equal(a, b), k


def test_malformed_npz_fails_before_training(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 8, 8)), y=np.zeros(9, int))
    with pytest.raises(SystemExit):
        main([*TINY, "--dataset", str(tmp_path / "bad.npz"), "--output-dir", str(tmp_path / "o")])
    assert "10 images but 9 labels" in capsys.readouterr().err


@pytest.mark.parametrize("name, index", [("cuda", 2), ("cuda:1", 1), ("auto", 2)])
def test_cuda_device_gets_an_index(monkeypatch, name, index):
    """`--device cuda` failed on a GPU: torch.cuda.set_device refuses a device without an index."""
    from canon.train import cli

    seen = []

    def set_device(dev):  # as torch's: an index is required
        if dev.index is None:
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{dev}")
        seen.append(dev)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    assert cli._device({"device": name}, 1, 0) == torch.device("cuda", index) == seen[0]
    with pytest.raises(cli.ConfigError, match="has 3 CUDA device"):
        cli._device({"device": "cuda:3"}, 1, 0)


def test_epochs_report_training_throughput(c4_run):
    out, _ = c4_run
    rows = list(csv.DictReader(open(out / "epochs.csv")))
    for r in rows:  # the steps alone: less than the epoch with its test evaluation
        assert 0 < float(r["train_seconds"]) <= float(r["seconds"]) and float(r["images_per_s"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    rates = sorted(float(r["images_per_s"]) for r in rows)
    assert rates[0] <= metrics["train_images_per_s"] <= rates[-1]
    # the canonicalizer's encoder timed apart against the median step (all methods of the run)
    assert 0 < metrics["encoder_ms_per_step"] and 0 < metrics["step_ms"]
    assert metrics["encoder_share"] == pytest.approx(metrics["encoder_ms_per_step"] / metrics["step_ms"], rel=1e-2)


def test_channels_last_trains_the_same_model_in_nhwc(tmp_path, digits):
    """--channels-last: weights and views NHWC, the same values as the NCHW model (float sums aside)."""
    cfg = cfg_of("--group", "C4", "--channels-last", "--methods", "canonicalized", "--output-dir", str(tmp_path))
    run(cfg, digits)
    assert load_checkpoint(str(tmp_path / "checkpoint.pt")).epoch == 1
    from canon import OrbitCanonicalizer
    from canon.networks import ConvEncoder

    can = OrbitCanonicalizer(ConvEncoder(3, out_dim=8, hidden=4), "C8", size=10).eval()
    views = torch.empty(0)
    can.encoder.register_forward_pre_hook(lambda _, args: views.set_(args[0].detach()))
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        ref = can(x)
        can.channels_last = True
        can.encoder.to(memory_format=torch.channels_last)
        got = can(x)
    assert views.is_contiguous(memory_format=torch.channels_last) and not views.is_contiguous()
    assert torch.allclose(got, ref, atol=1e-6)
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        OrbitCanonicalizer(can.encoder, "C4", channels_last="yes")


def test_compile_encoder_compiles_the_canonicalizers_encoder_in_place(digits, monkeypatch):
    """--compile-encoder: nn.Module.compile on the OrbitCanonicalizer's encoder only (checkpoint keys unchanged);
    the compiled run itself is measured on a GPU (bench/gpu_run.sh), inductor's CPU build is too slow for CI."""
    from canon.train.loop import _gpu_layout

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    cfg = cfg_of("--compile-encoder", "--methods", "canonicalized,plain")
    models = build_models(cfg, 1, 10, (8, 8))
    keys = {k: set(m.state_dict()) for k, m in models.items()}
    _gpu_layout(models, cfg)
    assert compiled == [models["canonicalized"].canonicalizer.encoder]
    assert {k: set(m.state_dict()) for k, m in models.items()} == keys


def test_gpu_loss_check_is_deferred_but_names_the_first_bad_step(monkeypatch):
    """On a GPU the NaN/Inf check of the loss runs every CHECK_EVERY steps (one host sync), and still names the
    step where the loss first went bad."""
    from canon.train import loop

    monkeypatch.setattr(loop, "CHECK_EVERY", 5)
    t = loop.Trainer.__new__(loop.Trainer)
    t.world, t.device, t.epoch, t._pending = 1, torch.device("meta"), 0, []
    for step, value in enumerate([1.0, 2.0, float("nan"), 3.0]):
        t.step = step
        t._check_loss("canonicalized", torch.tensor(value), {"task": torch.tensor(value)})
    assert len(t._pending) == 4  # nothing checked yet: no sync
    t.step = 4
    with pytest.raises(loop.NonFiniteError, match=r"epoch 1, step 3: the loss of 'canonicalized' is nan \(task nan\)"):
        t._check_loss("canonicalized", torch.tensor(4.0), {"task": torch.tensor(4.0)})
    assert t._pending == []


def test_schedule_is_torchs_lambda_lr_and_resumes_checkpoints_written_before_it():
    """The learning rate follows a torch LambdaLR (cosine factor); a checkpoint whose groups carry the old
    'base_lr' key resumes at lr = base × cosine(step), as the uninterrupted run had it."""
    from canon.train import loop

    cfg = cfg_of("--methods", "plain")
    models = build_models(cfg, 1, 10, (8, 8))
    opt = loop.build_optimizer(cfg, "plain", models["plain"])
    total = 40
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: loop.cosine(s, total))
    for _ in range(7):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == cfg["lr"] * loop.cosine(7, total)
    old = {**opt.param_groups[0]}
    old.pop("initial_lr")
    opt.param_groups[0].clear()
    opt.param_groups[0].update({**old, "base_lr": cfg["lr"], "lr": 123.0})  # stale lr, as old checkpoints held
    loop.Trainer._resume_schedule(sched, opt, 7)
    g = opt.param_groups[0]
    assert "base_lr" not in g and g["initial_lr"] == cfg["lr"] and g["lr"] == cfg["lr"] * loop.cosine(7, total)
    sched.step()
    assert g["lr"] == cfg["lr"] * loop.cosine(8, total)
