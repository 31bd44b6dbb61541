"""Deployment (canon.export): aten-only torch.export programs, ONNX through onnxruntime, TorchScript trace."""

import doctest
import importlib.util
import io
import warnings

import pytest
import torch
from conftest import assert_close, readme_block
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import canon
import canon.export as cx
from canon.decompositions import DECOMPOSITIONS
from canon.networks import ConvEncoder

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX, reason="onnx, onnxscript and onnxruntime are not installed (pip install 'canon-equivariance[export]')"
)


def small_model(group, size=12, channels=1, padding="zeros", interpolation="bilinear", output="invariant", seed=0):
    torch.manual_seed(seed)
    can = canon.OrbitCanonicalizer(
        ConvEncoder(channels, 8, hidden=4), group, padding=padding, interpolation=interpolation, seed=seed
    )
    if output == "dense":
        pred = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    else:
        pred = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 5))
    return canon.Canonicalized(pred, can, output=output).eval()


def graph_targets(program):
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


def non_aten_ops(program):
    """Torch ops in the graph outside the aten namespace (symbolic-size arithmetic such as operator.mul is fine)."""
    ops = {
        n.target
        for n in program.graph.nodes
        if n.op == "call_function" and isinstance(n.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))
    }
    return sorted(str(op) for op in ops if op.namespace != "aten")


# ----------------------------------------------------------------------------- the decomposition table
def test_every_registered_canon_op_has_a_decomposition():
    ops = cx.registered_ops()
    names = {op._schema.name for op in ops}
    assert {"canon::orbit", "canon::select", "canon::transform"} <= names, names
    assert cx.missing_decompositions() == [], "add an aten decomposition to canon/decompositions.py for these ops"
    stale = set(DECOMPOSITIONS) - {n.split("::", 1)[1] for n in names}
    assert not stale, f"canon/decompositions.py decomposes ops that are no longer registered: {sorted(stale)}"


class RecordCanonOps(TorchDispatchMode):
    """Records every canon::* op call (op, args, kwargs, output) below autograd."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.namespace == "canon":
            self.calls.append((func, args, kwargs, out))
        return out


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def test_decompositions_compute_what_the_ops_compute():
    # Every canon op a training step and an inference step call, with the arguments they
    # really get, against its decomposition: exact groups bit for bit, others to float32 rounding.
    rec = RecordCanonOps()
    x = torch.rand(3, 2, 9, 9, requires_grad=True)
    with rec, canon.ops.registered_ops():  # eager calls take the direct autograd path otherwise
        for group, padding, interpolation in (
            ("D4", "zeros", "bilinear"),
            ("C8", "reflection", "bilinear"),
            ("C6", "border", "nearest"),
        ):
            can = canon.OrbitCanonicalizer(
                ConvEncoder(2, 8, hidden=4),
                group,
                size=7,
                padding=padding,
                interpolation=interpolation,
                learn_reference=True,
            )
            xc = can(x)
            y = can.invert(xc * 2.0)
            # the module's losses come with the selection; the standalone loss is its own op
            loss = (
                y.square().mean()
                + can.contrastive_loss()
                + can.prior_loss()
                + canon.losses.contrastive_loss(can.state.vectors, "raw")
            )
            loss.backward()
            with torch.no_grad():
                can.eval()(x)
    table = cx.decompositions()
    seen = set()
    for func, args, kwargs, out in rec.calls:
        seen.add(func)
        got = _flat(table[func](*args, **kwargs))
        want = _flat(out)
        assert len(got) == len(want), f"{func}: decomposition returns {len(got)} outputs, the op {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.dtype == w.dtype and g.shape == w.shape, (
                f"{func} output {i}: {g.dtype} {tuple(g.shape)} vs op {w.dtype} {tuple(w.shape)}"
            )
            if w.dtype == torch.int64:
                assert torch.equal(g, w), f"{func} output {i} differs"
            else:
                assert_close(g, w, msg=f"{func} output {i}:", case="tap_formula_vs_grid_sample")
    assert seen == set(table), f"ops not exercised by this test (extend it): {sorted(map(str, set(table) - seen))}"


# ----------------------------------------------------------------------------- torch.export
@pytest.mark.parametrize(
    "group, padding, interpolation, exact",
    [
        ("C4", "zeros", "bilinear", True),
        ("D4", "reflection", "bilinear", True),
        ("C8", "reflection", "bilinear", False),
        ("C8", "border", "nearest", False),
    ],
)
def test_export_is_aten_only_and_matches_eager(group, padding, interpolation, exact):
    model = small_model(group, padding=padding, interpolation=interpolation)
    x = torch.rand(3, 1, 12, 12)
    program = cx.export(model, (x,))
    assert non_aten_ops(program) == []
    assert not any("canon" in t for t in graph_targets(program))
    with torch.no_grad():
        want = model(x)
        got = program.module()(x)
    if exact:
        assert torch.equal(got, want)
    else:
        assert_close(got, want, case="onnxruntime")
    # exporting left the eager model intact (its view-matrix cache holds real tensors)
    with torch.no_grad():
        assert torch.equal(model(x), want)


def test_export_core_aten_and_dynamic_batch():
    model = small_model("D4")
    program = cx.export(model, (torch.rand(2, 1, 12, 12),), dynamic_batch=True, core_aten=True)
    assert non_aten_ops(program) == []
    assert "aten.linear.default" not in graph_targets(program)  # decomposed to core aten
    for B in (1, 5):
        x = torch.rand(B, 1, 12, 12)
        with torch.no_grad():
            assert torch.equal(program.module()(x), model(x))


def test_export_checks_its_arguments():
    model = small_model("C4")
    with pytest.raises(ValueError, match="eval mode"):
        cx.export(model.train(), (torch.rand(1, 1, 12, 12),))
    with pytest.raises(TypeError, match="nn.Module"):
        cx.export(lambda x: x, (torch.rand(1, 1, 12, 12),))
    with pytest.raises(TypeError, match="tuple of tensors"):
        cx.export(model.eval(), [1, 2])
    model.canonicalizer.check_finite = True
    with pytest.raises(ValueError, match=r"check_finite=True\) at \['canonicalizer'\]"):
        cx.export(model, (torch.rand(1, 1, 12, 12),))


def test_export_regular_dense_output():
    model = canon.Canonicalized(
        nn.Conv2d(1, 8, 3, padding=1), small_model("D4").canonicalizer, output="dense", kind="regular"
    ).eval()
    x = torch.rand(2, 1, 12, 12)
    program = cx.export(model, (x,))
    with torch.no_grad():
        assert torch.equal(program.module()(x), model(x))


def test_export_fails_clearly_without_a_decomposition(monkeypatch):
    monkeypatch.delitem(DECOMPOSITIONS, "select")
    with pytest.raises(RuntimeError, match=r"no aten decomposition .*canon.select"):
        cx.export(small_model("C4"), (torch.rand(1, 1, 12, 12),))


# ----------------------------------------------------------------------------- ONNX
def ort_session(onnx_program):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        onnx_program.model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )


def ort_run(session, x):
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@needs_onnx
def test_onnx_matches_eager_for_a_resampled_group():
    # C8 with reflection padding: 45° views are bilinear taps, reflection included (no GridSample)
    model = small_model("C8", size=16, channels=3, padding="reflection")
    x = torch.rand(4, 3, 16, 16)
    session = ort_session(cx.to_onnx(model, (x,), dynamic_batch=True))
    with torch.no_grad():
        for B in (4, 2):
            assert_close(ort_run(session, x[:B]), model(x[:B]), msg=f"B={B}", case="onnxruntime")


@needs_onnx
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_onnx_canonicalization_is_exactly_invariant(group):
    # canon(T_g x) == canon(x) bit for bit through onnxruntime, for every element g
    can = small_model(group, channels=2).canonicalizer
    x = torch.rand(3, 2, 12, 12)
    session = ort_session(cx.to_onnx(can, (x,), dynamic_batch=True))
    base = ort_run(session, x)
    with torch.no_grad():
        assert torch.equal(base, can(x))
    for g in range(canon.as_group(group).order):
        assert torch.equal(ort_run(session, canon.transform(x, g, group)), base), f"element {g}"


@needs_onnx
def test_onnx_dense_model_is_exactly_equivariant():
    model = small_model("D4", output="dense")
    x = torch.rand(2, 1, 12, 12)
    session = ort_session(cx.to_onnx(model, (x,)))
    base = ort_run(session, x)
    with torch.no_grad():
        assert_close(base, model(x), case="onnxruntime_dense")
    for g in (1, 3, 4, 6):
        assert torch.equal(ort_run(session, canon.transform(x, g, "D4")), canon.transform(base, g, "D4")), (
            f"element {g}"
        )


@needs_onnx
def test_onnx_file_round_trip(tmp_path):
    import onnx

    model = small_model("C4")
    x = torch.rand(2, 1, 12, 12)
    path = tmp_path / "model.onnx"
    cx.to_onnx(model, x, path=str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert not [n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")], "only standard ONNX operators"


def test_to_onnx_names_the_missing_packages(monkeypatch):
    monkeypatch.setattr(cx, "_importable", lambda name: False)
    with pytest.raises(ImportError, match=r"\[export\]"):
        cx.to_onnx(small_model("C4"), torch.rand(1, 1, 12, 12))


# ----------------------------------------------------------------------------- TorchScript
def test_trace_matches_eager_checks_the_size_and_round_trips():
    model = small_model("C4")  # never run before tracing
    x = torch.rand(2, 1, 12, 12)
    traced = cx.trace(model, x)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        for B in (2, 3):
            xb = torch.rand(B, 1, 12, 12)
            want = model(xb)
            assert torch.equal(traced(xb), want) and torch.equal(loaded(xb), want)
            assert torch.equal(loaded(torch.rot90(xb, 1, dims=(-2, -1))), want)
    with pytest.raises(Exception, match=r"expected input \(B, 1, 12, 12\)"):
        loaded(torch.rand(2, 1, 16, 16))


def test_trace_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cx.trace(small_model("C4"), torch.rand(1, 144))


def test_docstring_examples():
    if not HAS_ONNX:
        pytest.skip("the to_onnx example needs onnx, onnxscript and onnxruntime")
    result = doctest.testmod(cx, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_readme_deployment_example_runs(tmp_path, monkeypatch):
    code = readme_block("### Deployment")
    if not HAS_ONNX:
        code = "\n".join(line for line in code.splitlines() if "to_onnx" not in line)
    monkeypatch.chdir(tmp_path)
    scope = {"model": small_model("C4"), "x": torch.rand(2, 1, 12, 12)}
    exec(compile(code, "README.md", "exec"), scope)
    with torch.no_grad():
        assert torch.equal(scope["program"].module()(scope["x"]), scope["model"](scope["x"]))
        assert torch.equal(scope["traced"](scope["x"]), scope["model"](scope["x"]))
    assert (tmp_path / "model.onnx").exists() == HAS_ONNX


@needs_onnx
def test_dynamic_batch_from_one_example_image():
    # torch.export fixes a dimension of size 1 to 1 ("Constraints violated (batch)"): one example image
    # is the common case, so it is traced as a batch of two copies
    model = small_model("C4", channels=1)
    session = ort_session(cx.to_onnx(model, (torch.rand(1, 1, 12, 12),), dynamic_batch=True))
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        for B in (1, 3):
            assert_close(ort_run(session, x[:B]), model(x[:B]), msg=f"B={B}", case="onnxruntime")


# ----------------------------------------------------------------------------- the standard tools, unchanged
def _standard_models():
    dense = small_model("D4", output="dense")
    can8 = canon.OrbitCanonicalizer(ConvEncoder(2, 8, hidden=4), "C8", padding="border", seed=3).eval()
    return {"canonicalizer C8": (can8, 2), "dense D4": (dense, 1)}


@needs_onnx
@pytest.mark.parametrize(
    "model_name,dynamo", [("canonicalizer C8", True), ("dense D4", True), ("canonicalizer C8", False)],
    ids=["C8-dynamo", "D4-dynamo", "C8-torchscript"],
)  # fmt: skip
def test_torch_onnx_export_runs_in_onnxruntime(model_name, dynamo):
    # torch.onnx.export itself (what Lightning's to_onnx calls), no canon helper: the ops decompose while
    # it traces. Two image sizes, each its own export.
    import onnxruntime

    model, channels = _standard_models()[model_name]
    for size in (12, 16):
        x = torch.rand(2, channels, size, size)
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            program = torch.onnx.export(model, (x,), None if dynamo else f, dynamo=dynamo, verbose=False)
        proto = program.model_proto.SerializeToString() if dynamo else f.getvalue()
        session = onnxruntime.InferenceSession(proto, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            assert_close(ort_run(session, x), model(x), msg=f"{model_name} {size}", case="onnxruntime")


@pytest.mark.parametrize("model_name", ["canonicalizer C8", "dense D4"])
def test_torch_export_run_decompositions_is_aten_only(model_name):
    model, channels = _standard_models()[model_name]
    for size in (12, 16):
        x = torch.rand(3, channels, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the canonicalizer's last-forward attributes
            program = torch.export.export(model, (x,)).run_decompositions()
        assert not [t for t in graph_targets(program) if "canon" in t]
        with torch.no_grad():
            assert_close(program.module()(x), model(x), msg=f"{model_name} {size}")


def test_plain_jit_trace_of_a_fresh_model_is_right_or_raises():
    model = small_model("C8", size=12)  # never run before: its last-forward attributes do not exist yet
    x = torch.rand(2, 1, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (x,), check_trace=False)
    with torch.no_grad():
        assert_close(traced(x), model(x), msg="traced at 12×12")
        assert_close(traced(x[:1]), model(x[:1]), msg="another batch size")
    assert not any("canon::" in n.kind() for n in traced.inlined_graph.nodes())  # aten only: loads without canon
    with pytest.raises(RuntimeError, match="expanded size"):  # the views of 12×12 never meet a 16×16 input
        traced(torch.rand(2, 1, 16, 16))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert_close(torch.jit.load(buf)(x), traced(x), msg="saved and loaded")


def test_an_exported_training_graph_keeps_the_ops_gradients():
    # The decompositions carry the straight-through one-hot and the mixture straight-through rule: the
    # exported module's gradients are the eager module's.
    torch.manual_seed(0)
    can = canon.OrbitCanonicalizer(ConvEncoder(1, 8, hidden=4), "C8", seed=1).train()
    x = torch.rand(3, 1, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(can, (x,))
    exported = program.module()
    g = torch.randn(3, 1, 12, 12)
    xe, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    (can(xe) * g).sum().backward()
    eager = {k: p.grad.clone() for k, p in can.named_parameters()}
    for p in [*can.parameters(), *exported.parameters()]:  # the exported module may share the parameters
        p.grad = None
    (exported(xp) * g).sum().backward()
    for k, p in exported.named_parameters():
        assert_close(p.grad, eager[k], msg=f"gradient of {k}", case="tap_formula_vs_grid_sample")
    assert_close(xp.grad, xe.grad, msg="gradient of x", case="tap_formula_vs_grid_sample")
    assert any(v.abs().sum() > 0 for v in eager.values())


def test_lightning_to_onnx():
    L = pytest.importorskip("lightning", reason="Lightning is not installed (pip install lightning)")
    import onnxruntime

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = small_model("C4", size=12)

        def forward(self, x):
            return self.model(x)

    module = Module().eval()
    x = torch.rand(2, 1, 12, 12)
    f = io.BytesIO()
    module.to_onnx(f, x)
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert_close(ort_run(session, x), module(x), case="onnxruntime")
