"""Large CPU orbits lend their memory to the next once dropped (canon._memory); nothing held is ever written."""

import pytest
import torch

import canon
import canon._memory as mem

C4 = canon.as_group("C4")
BIG = (64, 1, 128, 128)  # its C4 orbit is 16.8 MB, above MIN_BYTES


def _orbit(x):
    return canon.orbit(x, C4)


def _fresh(x):
    mem.release()
    return _orbit(x)


def test_a_dropped_orbit_lends_its_memory_to_the_next_and_values_stay_right(monkeypatch):
    fresh_blocks = []  # addresses of the blocks canon._memory allocates

    class Spy:
        def __getattr__(self, name):
            return getattr(torch, name)

        def empty(self, *args, **kwargs):
            t = torch.empty(*args, **kwargs)
            if t.numel():  # (the reused block is handed out through an empty tensor set to its memory)
                fresh_blocks.append(t.data_ptr())
            return t

    x1, x2 = torch.rand(BIG), torch.rand(BIG)
    mem.release()
    monkeypatch.setattr(mem, "torch", Spy())
    o1 = _orbit(x1)
    assert o1.untyped_storage().nbytes() >= mem.MIN_BYTES and fresh_blocks == [o1.data_ptr()]
    p1 = o1.data_ptr()
    del o1
    o2 = _orbit(x2)
    assert o2.data_ptr() == p1 and fresh_blocks == [p1]  # the same block, no new allocation
    monkeypatch.undo()
    expected = _fresh(x2)
    assert expected.data_ptr() != p1 and torch.equal(o2, expected)


@pytest.mark.parametrize(
    "holder", ["tensor", "slice", "autograd graph", "inference tensor", "storage object", "shared memory"]
)
def test_memory_anything_still_holds_is_never_written(holder):
    x1, x2 = torch.rand(BIG), torch.rand(BIG)
    mem.release()
    keep = None
    if holder == "inference tensor":
        with torch.inference_mode():
            o1 = _orbit(x1)
        assert mem._kept is None  # made in inference mode: never kept for later calls
        keep_values, p1 = None, None  # once dropped, its address may come back from the OS
        del o1
    else:
        o1 = _orbit(x1)
        keep_values, p1 = o1.clone(), o1.data_ptr()
        if holder == "tensor":
            keep = o1
        elif holder == "slice":
            keep = o1[3, 1]
            keep_values = keep_values[3, 1]
        elif holder == "storage object":  # x.untyped_storage() kept: the memory is still in use
            storage = o1.untyped_storage()
            keep = torch.empty(0).set_(storage, 0, o1.shape)
            del storage  # the tensor made from it holds it now; the test below also ran with only `storage` held
        elif holder == "shared memory":  # e.g. sent to or from a DataLoader worker: another process may read it
            o1.share_memory_()  # moves the memory into a shared block: that block must never be lent
            keep_values, p1 = None, o1.data_ptr()
        else:  # a graph that saved the orbit for its backward
            w = torch.rand((), requires_grad=True)
            keep = (o1 * w).sum()
            keep_values = None
        del o1
    o2 = _orbit(x2)
    assert p1 is None or o2.data_ptr() != p1
    if keep_values is not None:
        assert torch.equal(keep, keep_values)
    if holder == "autograd graph":
        keep.backward()  # the saved orbit was not modified (version counter unchanged)
    assert torch.equal(o2, _fresh(x2))


def test_the_module_keeps_its_own_views_block_apart_from_the_shared_one():
    net = canon.OrbitCanonicalizer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128 * 128, 4)), "C4", dim=4)
    x = torch.rand(BIG)
    mem.release()
    with torch.no_grad():
        net(x)
        p = net.state.views.data_ptr()
        net(torch.rand(BIG))
        assert net.state.views.data_ptr() == p  # the module's own block, reused
        assert mem._kept is None  # the shared slot was not involved


def test_a_kept_storage_object_alone_keeps_the_memory():
    x1, x2 = torch.rand(BIG), torch.rand(BIG)
    mem.release()
    o1 = _orbit(x1)
    values, p1, storage = o1.clone(), o1.data_ptr(), o1.untyped_storage()
    del o1
    o2 = _orbit(x2)
    assert o2.data_ptr() != p1
    assert torch.equal(torch.empty(0).set_(storage, 0, values.shape), values)


def test_fake_tensors_and_traced_graphs_never_enter_or_leave_the_kept_block():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.rand(BIG)
    mem.release()
    with FakeTensorMode(allow_non_fake_inputs=True) as fake:  # canon's cached tables are real
        _orbit(fake.from_tensor(x))
    assert mem._kept is None
    real = _orbit(x)
    assert type(real) is torch.Tensor and torch.equal(real, _fresh(x))
    del real
    traced = make_fx(_orbit)(x)
    a = traced(x)
    b = traced(torch.rand(BIG))
    assert a.data_ptr() != b.data_ptr() and torch.equal(a, _fresh(x))


def test_a_reused_orbit_with_a_gradient_can_be_modified_in_place():
    xg = torch.rand(BIG, requires_grad=True)
    mem.release()
    for _ in range(3):  # the second and third orbits reuse the first one's memory
        v = canon.orbit(xg, C4)
        v.mul_(2)
        v.sum().backward()
        del v
    assert torch.equal(xg.grad, torch.full(BIG, 3 * 2 * 4.0))
