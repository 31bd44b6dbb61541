"""``python -m canon.train``: train, evaluate, write results. Also under ``torchrun`` (DDP)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings

import torch

from canon.backend import get_backend
from canon.data import load_dataset
from canon.train.checkpoint import WriteError, write_atomic
from canon.train.config import (
    ADDED_DEFAULTS,
    CANONICALIZING,
    RESUME_FREE,
    RESUME_WARN,
    ConfigError,
    RunError,
    build_parser,
    resolve,
    validate,
)
from canon.train.evaluate import angle_accuracy, canonicalizer_cost, collapse_statistics, evaluate, upright_accuracy
from canon.train.loop import CheckpointError, NonFiniteError, Trainer, read_checkpoint, save_checkpoint
from canon.train.rundir import OVERWRITTEN, RunDirectory, check_output_dir

__all__ = ["main", "run", "format_table"]


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def _setup_distributed(cfg: dict):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg["device"].startswith("cuda") or (cfg["device"] == "auto" and torch.cuda.is_available())
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def _device(cfg: dict, world: int, local: int) -> torch.device:
    name = cfg["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here")
        if world > 1:
            dev = torch.device("cuda", local)
        elif dev.index is None:  # set_device needs an index ("cuda" alone is refused)
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(dev)
    return dev


def param_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in state-dict order (equal iff bitwise equal)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _write_json(path: str, obj) -> None:
    text = json.dumps(obj, indent=2)
    write_atomic(path, lambda f: f.write(text.encode()))


def _write_csv(path: str, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, lambda f: f.write(buf.getvalue().encode()))


def format_table(metrics: dict, group_name: str) -> str:
    """Markdown table of the results (percentages)."""

    def pct(m, k):
        return f"{100 * m[k]:.1f}%" if k in m else "–"

    lines = [
        f"| method | upright acc | {group_name}-average acc | angle-average acc | invariance rate | canonical "
        "consistency | identity metric |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        flag = " (degenerate*)" if m.get("degenerate") else ""
        lines.append(
            f"| {name}{flag} | {pct(m, 'upright_acc')} | {pct(m, 'group_avg_acc')} | {pct(m, 'angle_avg_acc')} | "
            f"{pct(m, 'invariance_rate')} "
            f"| {pct(m, 'canonical_consistency')} | {pct(m, 'identity_metric')} |"
        )
    lines.append("")
    for name, m in metrics.items():
        if m.get("degenerate"):
            top = m["majority_prediction"]
            lines.append(
                f"* {name} predicts class {top['class']} for {100 * top['share']:.1f}% of the upright test images: its "
                "invariance rate and accuracies say nothing about canonicalization (train longer or check the data)"
            )
    lines.append("per-element accuracy (group order): ")
    for name, m in metrics.items():
        lines.append(f"  {name:>13}: " + " ".join(f"{100 * a:.1f}" for a in m["per_element_acc"]))
    with_angles = {k: m for k, m in metrics.items() if "angle_acc" in m}
    if with_angles:
        angles = next(iter(with_angles.values()))["angle_acc"]["angles_deg"]
        lines.append(
            f"accuracy at {', '.join(map(str, angles[:3]))}, ... {angles[-1]} degrees (flipped copies after them for "
            "dihedral groups): "
        )
        for name, m in with_angles.items():
            t = m["angle_acc"]
            lines.append(f"  {name:>13}: " + " ".join(f"{100 * a:.1f}" for a in [*t["acc"], *t.get("flipped_acc", [])]))
    return "\n".join(lines)


def _reduce_sums(sums: dict, world: int, device) -> dict:
    if world <= 1:
        return sums
    import torch.distributed as dist

    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def _check_resume(old: dict, new: dict) -> None:
    old = {**ADDED_DEFAULTS, **old}
    diff = [k for k in new if k not in RESUME_FREE and old.get(k) != new[k]]
    if diff:
        raise ConfigError(
            "--resume: the checkpoint was written with different options: "
            + ", ".join(f"{k}={old.get(k)!r} (now {new[k]!r})" for k in diff)
        )
    changed = [k for k in RESUME_WARN if old.get(k) != new.get(k)]
    if changed:
        print(
            "warning: --resume with different "
            + ", ".join(f"{k} ({old.get(k)!r} → {new.get(k)!r})" for k in changed)
            + ": the run continues, but its result will differ from an uninterrupted run with either setting",
            file=sys.stderr,
        )


def _open_run_dir(cfg: dict, rank: int, world: int) -> RunDirectory | None:
    """Rank 0 creates and locks the folder; every rank learns whether that worked."""
    run_dir, error = None, None
    if rank == 0:
        try:
            run_dir = RunDirectory(cfg["output_dir"], resume=cfg["resume"], overwrite=cfg.get("overwrite", False))
        except RunError as e:
            error = e
        if run_dir is not None and run_dir.set_aside:
            _log(
                rank,
                f"--overwrite: the previous run's files are in {os.path.join(cfg['output_dir'], OVERWRITTEN)} until "
                "this run writes its first checkpoint",
            )
        if run_dir is not None and run_dir.removed_temporaries:
            _log(
                rank, f"removed temporary files left by an interrupted writer: {', '.join(run_dir.removed_temporaries)}"
            )
    if world > 1:
        import torch.distributed as dist

        box = [str(error) if error else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] and error is None:
            error = RunError(box[0])
    if error is not None:
        raise error
    return run_dir


def data_digest(train, test) -> str:
    """sha256 of the training and test images and labels (shapes, dtypes and bytes): the data a
    checkpoint was trained on, so that ``--resume`` notices a dataset file changed in place."""
    h = hashlib.sha256()
    for t in (train.x, train.y, test.x, test.y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_resume_data(old: dict, new: dict, rank: int) -> None:
    if "sha256" not in old:
        _log(rank, "warning: --resume: the checkpoint predates data fingerprints; the data cannot be checked")
    elif old["sha256"] != new["sha256"]:
        raise RunError(
            "--resume: the data differ from those the checkpoint was trained on (sha256 of the training and test "
            f"images and labels {old['sha256'][:12]}… then, {new['sha256'][:12]}… now): a dataset file changed, or "
            "--dataset/--test-data/--image-size/--test-fraction point elsewhere. Restore the data, or start "
            "afresh with --overwrite (or in another --output-dir)"
        )


def _resume(trainer: Trainer, ckpt_path: str, cfg: dict, rank: int) -> None:
    if not os.path.isfile(ckpt_path):
        _log(rank, f"--resume: no checkpoint at {ckpt_path}, starting from scratch")
        return
    try:
        ck = read_checkpoint(ckpt_path)
        _check_resume(ck["config"], cfg)
        _check_resume_data(ck["data"], trainer.data_info, rank)
        trainer.load_state_dict(ck)
    except CheckpointError as e:
        raise CheckpointError(f"--resume: {e}") from None
    if trainer.epoch > cfg["epochs"]:  # before config.json is rewritten: it would claim fewer epochs than trained
        raise ConfigError(
            f"--resume: --epochs {cfg['epochs']} is fewer than the {trainer.epoch} epochs the checkpoint has trained "
            f"(--epochs counts them all); give --epochs {trainer.epoch} or more"
        )
    _log(rank, f"resumed from {ckpt_path} after epoch {trainer.epoch}")


def run(cfg: dict, data=None) -> dict | None:
    """Train and evaluate as configured; returns the metrics (None when stopped early by --stop-after).

    Args:
        cfg: configuration (:func:`canon.train.resolve`); checked again here.
        data: (train, test) :class:`canon.data.ImageData`, loaded from ``cfg`` when None.

    Raises:
        ConfigError: a bad option, or models that cannot be built for the data (nothing written yet).
        RunError: the output folder is in use or holds a previous run; training diverged
            (:class:`~canon.train.loop.NonFiniteError`).
        CheckpointError: ``--resume`` found a damaged or foreign checkpoint.
    """
    t0 = time.perf_counter()
    validate(cfg)
    # data first: malformed input fails before any process group or file exists
    train, test = data if data is not None else load_data(cfg)
    rank, world, local = _setup_distributed(cfg)
    run_dir = trainer = None
    try:
        device = _device(cfg, world, local)
        torch.set_num_threads(cfg["threads"] or max(1, (os.cpu_count() or 1) // world))
        trainer = _build_trainer(cfg, train, device, rank, world)
        trainer.data_info["sha256"] = data_digest(train, test)
        run_dir = _open_run_dir(cfg, rank, world)  # after the models: a bad encoder leaves nothing on disk
        if cfg["resume"]:
            _resume(trainer, os.path.join(cfg["output_dir"], "checkpoint.pt"), cfg, rank)
        _write_run_info(trainer, cfg, train, test, device, rank, world)
        if not _train_epochs(trainer, cfg, test, device, rank, world, run_dir):
            return None
        tm = time.perf_counter()
        result = _evaluate_all(trainer, cfg, train, test, device, rank, world)
        eval_time = time.perf_counter() - tm
        if rank == 0:
            result.update(_encoder_share(trainer))
        if rank == 0:
            _write_results(trainer, cfg, test, device, result, eval_time, t0)
        if world > 1:  # the ranks leave together
            torch.distributed.barrier()
        return result
    finally:
        if run_dir is not None:
            run_dir.release()
        if world > 1:
            import gc

            import torch.distributed as dist

            # The DDP wrappers hold the process group: dropped here, its gloo threads end now rather
            # than at interpreter exit, where they aborted a rank now and then (SIGABRT, "terminate
            # called without an active exception", about 1 run in 10 of tests/test_distributed.py).
            trainer = None  # noqa: F841
            gc.collect()
            dist.destroy_process_group()


def _build_trainer(cfg: dict, train, device: torch.device, rank: int, world: int) -> Trainer:
    try:
        trainer = Trainer(cfg, train, device, rank, world, ddp=world > 1)
        trainer.probe()  # images the models cannot take are refused before anything is written
        return trainer
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from e
    except AttributeError as e:  # torchvision:<name> with a name torchvision does not have
        raise ConfigError(f"--encoder {cfg['encoder']}: cannot build it ({e})") from e


def _write_run_info(trainer: Trainer, cfg: dict, train, test, device, rank: int, world: int) -> None:
    """config.json (options, data, environment) and the first log line."""
    info = {
        "config": cfg,
        "data": {**trainer.data_info, "train_samples": len(train), "test_samples": len(test)},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "canon_backend": get_backend(),
            "world_size": world,
            "threads_per_process": torch.get_num_threads(),
            "steps_per_epoch_per_process": trainer.steps_per_epoch,
        },
    }
    if rank == 0:
        _write_json(os.path.join(cfg["output_dir"], "config.json"), info)
    _log(
        rank,
        f"{trainer.group.name} on {cfg['dataset']}: {len(train)} train / {len(test)} test, methods "
        f"{', '.join(cfg['methods'])}, device {device}, {world} process(es)",
    )


def _encoder_share(trainer: Trainer) -> dict:
    """The canonicalized method's encoder (forward + backward on one batch of views, timed apart) against
    the median training step of the run (every method of the run together): where a step's time goes."""
    rows = [r for r in trainer.history if "train_seconds" in r]
    t_enc = trainer.encoder_time() if rows else None
    if t_enc is None:
        return {}
    step_s = statistics.median(r["train_seconds"] for r in rows) / trainer.steps_per_epoch
    return {
        "encoder_ms_per_step": round(1e3 * t_enc, 3),
        "step_ms": round(1e3 * step_s, 3),
        "encoder_share": round(t_enc / step_s, 4),
    }


def _train_epochs(trainer: Trainer, cfg: dict, test, device, rank: int, world: int, run_dir=None) -> bool:
    """The remaining epochs, each followed by a checkpoint (the first lets ``run_dir`` drop what --overwrite
    set aside); False when --stop-after stopped them early."""
    show = not cfg["quiet"] and rank == 0 and sys.stderr.isatty()
    from tqdm import tqdm

    done_now = 0
    while trainer.epoch < cfg["epochs"]:
        if cfg["stop_after"] and done_now >= cfg["stop_after"]:
            _log(rank, f"stopped after {done_now} epoch(s) (--stop-after); continue with --resume")
            return False
        te = time.perf_counter()
        bar = tqdm(
            total=trainer.steps_per_epoch,
            desc=f"epoch {trainer.epoch + 1}/{cfg['epochs']} loss/acc",
            disable=not show,
            leave=True,
        )
        try:
            sums = _reduce_sums(trainer.train_epoch(bar), world, device)  # (ends with a host sync)
        finally:
            bar.close()
        train_s = time.perf_counter() - te  # the steps alone, before the test evaluation
        trainer.check_finite(sums)  # before anything of this epoch is written
        row = _epoch_row(trainer, cfg, sums, test, device, rank, world)
        trainer.train_time += time.perf_counter() - te
        row["seconds"] = round(time.perf_counter() - te, 3)
        row["train_seconds"] = round(train_s, 3)
        # images through the training step per second, every method of the run together (all ranks)
        row["images_per_s"] = round(sums["samples"] / max(train_s, 1e-9), 1)
        trainer.epoch += 1
        trainer.history.append(row)
        done_now += 1
        if rank == 0:
            out = cfg["output_dir"]
            save_checkpoint(os.path.join(out, "checkpoint.pt"), trainer.state_dict())
            if run_dir is not None:
                run_dir.checkpoint_written()
            _write_csv(os.path.join(out, "epochs.csv"), trainer.history)
            if not show and not cfg["quiet"]:
                accs = " ".join(
                    f"{k[: -len('_test_upright_acc')]}={100 * v:.1f}%"
                    for k, v in row.items()
                    if k.endswith("_test_upright_acc")
                )
                print(
                    f"epoch {row['epoch']}/{cfg['epochs']} ({row['seconds']:.1f}s; training "
                    f"{row['images_per_s']:.0f} images/s) upright test acc: {accs}",
                    flush=True,
                )
        if world > 1:
            torch.distributed.barrier()
    return True


def _epoch_row(trainer: Trainer, cfg: dict, sums: dict, test, device, rank: int, world: int) -> dict:
    """One row of epochs.csv: the epoch's mean statistics and each model's upright test accuracy."""
    n = sums["samples"]
    row = {"epoch": trainer.epoch + 1, "step": trainer.step}
    for k, v in sorted(sums.items()):
        if k != "samples":
            row[k.replace("/", "_") if "/" in k else k] = v / n
    # unwrapped models: a DDP forward would run collectives, and ranks may hold different
    # numbers of test batches
    for name, model in trainer.raw.items():
        row[f"{name}_test_upright_acc"] = upright_accuracy(model, test, device, cfg["eval_batch_size"], rank, world)
    return row


def _evaluate_all(trainer: Trainer, cfg: dict, train, test, device, rank: int, world: int) -> dict:
    """Every metric of metrics.json: the group's copies, the angle steps, collapse statistics, cost."""
    group, bs = trainer.group, cfg["eval_batch_size"]
    n_angles = (360 // cfg["angle_step"]) * (2 if group.reflections else 1) if cfg["angle_step"] else 0
    if not cfg["quiet"]:
        angles = f" and {n_angles} angles (--angle-step)" if n_angles else ""
        _log(
            rank,
            f"evaluating {len(test)} test images in {group.order + n_angles} transformed copies each (the "
            f"{group.order} elements of {group.name}{angles}) for {len(trainer.raw)} method(s): the cost grows "
            "with |G| and the angles, not with the training steps",
        )
    from tqdm import tqdm

    local = math.ceil(len(test) / world)
    bar = tqdm(
        total=local * (group.order + n_angles) * len(trainer.raw),
        desc="evaluation (images x copies x methods)",
        disable=cfg["quiet"] or rank != 0 or not sys.stderr.isatty(),
        unit="img",
        unit_scale=True,
    )
    try:
        metrics = evaluate(trainer.raw, test, group, device, bs, cfg["padding"], rank, world, progress=bar.update)
        if cfg["angle_step"]:
            angles = angle_accuracy(
                trainer.raw, test, group, cfg["angle_step"], device, bs, cfg["padding"], rank, world,
                progress=bar.update,
            )  # fmt: skip
            for name, m in angles.items():
                metrics[name].update(m)
    finally:
        bar.close()
    cost = {}  # timings vary from run to run: kept apart from the (reproducible) metrics
    for name in CANONICALIZING:
        if name in trainer.raw:
            metrics[name].update(collapse_statistics(trainer.raw[name], test, device, bs, rank, world))
            if rank == 0:
                cost[name] = canonicalizer_cost(trainer.raw[name], train.x[: cfg["batch_size"]].to(device))
    result = {"group": group.name, "dataset": cfg["dataset"], "epochs": trainer.epoch, "methods": metrics}
    if cost:
        result["canonicalizer_cost"] = cost
    if world > 1:
        import torch.distributed as dist

        digests = [None] * world
        dist.all_gather_object(digests, {k: param_digest(m) for k, m in trainer.raw.items()})
        result["rank_param_sha256"] = digests
    return result


def _write_results(trainer: Trainer, cfg: dict, test, device, result: dict, eval_time: float, t0: float) -> None:
    """Plots, metrics.json and the printed table (rank 0)."""
    out, group, metrics = cfg["output_dir"], trainer.group, result["methods"]
    if not cfg["no_plots"]:
        from canon.train.plots import plot_accuracy, plot_canonical_grid

        plot_accuracy(metrics, group, os.path.join(out, "accuracy_vs_angle.png"))
        for name in CANONICALIZING:
            if name in trainer.raw:
                file = "canonical_grid.png" if name == "canonicalized" else f"canonical_grid_{name}.png"
                plot_canonical_grid(
                    trainer.raw[name], test, group, device, os.path.join(out, file), padding=cfg["padding"]
                )
    result["train_time_s"] = round(trainer.train_time, 2)
    rates = [r["images_per_s"] for r in trainer.history if "images_per_s" in r]
    if rates:  # the median epoch: the first one pays compilation and warm-up on a GPU
        result["train_images_per_s"] = float(statistics.median(rates))
    result["eval_time_s"] = round(eval_time, 2)
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    _write_json(os.path.join(out, "metrics.json"), result)
    print(format_table(metrics, group.name))
    print(
        f"wall time {result['wall_time_s']:.1f}s (this invocation; training {result['train_time_s']:.1f}s in "
        f"total, evaluation {eval_time:.1f}s); results in {out}"
    )
    if "train_images_per_s" in result:
        line = f"training throughput: {result['train_images_per_s']:.0f} images/s (median epoch, all methods together)"
        if "encoder_share" in result:
            line += (
                f"; the canonicalizer's encoder (forward + backward, timed apart) {result['encoder_ms_per_step']:.2f} "
                f"ms of a {result['step_ms']:.2f} ms step ({100 * result['encoder_share']:.0f}%)"
            )
        print(line)


def load_data(cfg: dict):
    """The (train, test) data of ``cfg``; the loader's warnings (a test label never trained on) printed as
    one ``warning:`` line each on standard error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        data = load_dataset(
            cfg["dataset"], cfg["test_fraction"], cfg["split_seed"], cfg["test_data"], cfg["image_size"]
        )
    for w in caught:
        if os.environ.get("RANK", "0") == "0":
            print(f"warning: {w.message}", file=sys.stderr, flush=True)
    return data


def _resume_hint(argv: list[str], out: str, why: str = "interrupted", when: str = "") -> str:
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    ckpt = os.path.join(out, "checkpoint.pt")
    where = (
        f"the last checkpoint is {ckpt}" if os.path.isfile(ckpt) else "no checkpoint is there yet, so it starts again"
    )
    return f"{why}; {where}; {when}continue with: python -m canon.train {shlex.join(args)}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m canon.train`` and ``canon-train``.

    Exit status: 0 done; 2 a bad option or dataset (nothing written); 1 the run could not
    go on (folder in use or holding a previous run, damaged checkpoint, NaN/Inf in training);
    130 interrupted (one line says how to resume).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    first = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 owns the folder
    try:
        cfg = resolve(args)
        if first:
            check_output_dir(cfg["output_dir"], cfg["resume"], cfg["overwrite"])
        data = load_data(cfg)
    except RunError as e:
        _fail(str(e), 1)
    except (ValueError, FileNotFoundError, ImportError) as e:
        parser.error(str(e))
    except KeyboardInterrupt:
        _fail("interrupted while loading the data; nothing was written", 130)
    try:
        run(cfg, data)
    except ConfigError as e:
        parser.error(str(e))
    except NonFiniteError as e:
        ckpt = os.path.join(cfg["output_dir"], "checkpoint.pt")
        kept = (
            f"the last checkpoint, {ckpt}, holds the weights from before it"
            if os.path.isfile(ckpt)
            else "no checkpoint was written"
        )
        _fail(f"{e}; {kept}", 1)
    except (RunError, CheckpointError, FileNotFoundError) as e:
        _fail(str(e), 1)
    except WriteError as e:  # disk full, file size limit, something planted at a file's name
        _fail(_resume_hint(argv, cfg["output_dir"], str(e), "once that is solved, "), 1)
    except RuntimeError as e:  # (torch.OutOfMemoryError is one)
        if not _out_of_memory(e):
            raise
        _fail(
            f"out of memory ({str(e).strip().splitlines()[0]}) at --batch-size {cfg['batch_size']}, --view-size "
            f"{cfg['view_size'] or 'min(H, 16)'}, --encoder-width {cfg['encoder_width']}: make one of them "
            "smaller; the last checkpoint, if any, is kept",
            1,
        )
    except KeyboardInterrupt:
        if first:
            print(_resume_hint(argv, cfg["output_dir"]), file=sys.stderr, flush=True)
        sys.exit(130)


def _out_of_memory(e: RuntimeError) -> bool:
    """Whether ``e`` is an allocator's refusal (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    return isinstance(e, torch.OutOfMemoryError) or "not enough memory" in str(e)


def _fail(message: str, status: int) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops, rank 0 says why
        print(f"python -m canon.train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)
