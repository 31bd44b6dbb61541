"""Huge pages for large fresh CPU orbits (canon._memory): what is advised, and that Linux follows."""

import os

import pytest
import torch

import canon
import canon._memory as mem
from canon.reference import orbit_empty


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(mem, "_madvise", lambda start, length, advice: calls.append((start, length, advice)) or 0)
    return calls


def test_only_whole_huge_pages_inside_large_cpu_tensors_are_advised(recorded):
    big = torch.empty(mem.MIN_BYTES // 4 + 12345)  # float32: just above the threshold, unaligned end
    assert mem.advise_huge_pages(big) is big
    ((start, length, advice),) = recorded
    lo, hi = big.untyped_storage().data_ptr(), big.untyped_storage().data_ptr() + big.untyped_storage().nbytes()
    assert advice == 14 and start % mem.HUGE_PAGE_BYTES == 0 and length % mem.HUGE_PAGE_BYTES == 0
    assert lo <= start and start + length <= hi and hi - lo - length < 2 * mem.HUGE_PAGE_BYTES
    recorded.clear()
    mem.advise_huge_pages(torch.empty(mem.MIN_BYTES // 4 - 1))  # below the threshold
    mem.advise_huge_pages(torch.empty(mem.MIN_BYTES, device="meta"))  # no memory
    assert recorded == []


def test_large_cpu_orbits_are_advised_and_their_values_unchanged(recorded):
    out = orbit_empty(64, 8, 3, 96, 96, torch.float32, "cpu", channels_last=True)
    assert len(recorded) == 1 and out.shape == (64, 8, 3, 96, 96)
    recorded.clear()
    x = torch.rand(2, 3, 16, 16)
    recorded.clear()
    small = canon.orbit(x, canon.as_group("C8"), size=24)
    assert recorded == []  # small orbits are left alone
    mem._madvise = False  # as on a machine without the madvise policy
    assert torch.equal(canon.orbit(x, canon.as_group("C8"), size=24), small)


def _huge_kib(ptr: int) -> int:
    """AnonHugePages (kB) of the mapping of this process that holds address ``ptr``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(a, 16) for a in head.split("-"))
                inside = lo <= ptr < hi
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(
    not os.path.exists(mem._POLICY) or "[madvise]" not in open(mem._POLICY).read(),
    reason="the kernel's transparent-huge-page policy here is not 'madvise' (nothing to advise)",
)
def test_linux_backs_an_advised_orbit_with_huge_pages(monkeypatch):
    monkeypatch.setattr(mem, "_madvise", None)  # found afresh
    monkeypatch.delenv("CANON_HUGE_PAGES", raising=False)
    out = canon.orbit(torch.rand(64, 3, 32, 32), canon.as_group("C8"), size=96)  # 57 MB
    assert _huge_kib(out.data_ptr() + out.untyped_storage().nbytes() // 2) > 0
    monkeypatch.setattr(mem, "_madvise", None)
    monkeypatch.setenv("CANON_HUGE_PAGES", "0")
    off = canon.orbit(torch.rand(64, 3, 32, 32), canon.as_group("C8"), size=96)
    assert _huge_kib(off.data_ptr() + off.untyped_storage().nbytes() // 2) == 0


C4 = canon.as_group("C4")
BIG = (64, 1, 128, 128)  # its C4 orbit is 16.8 MB, above MIN_BYTES


def _orbit(x):
    return canon.orbit(x, C4)


def _fresh(x):
    mem.release()
    return _orbit(x)


def test_a_dropped_orbit_lends_its_memory_to_the_next_and_values_stay_right(monkeypatch):
    fresh_blocks = []
    advise = mem.advise_huge_pages
    monkeypatch.setattr(mem, "advise_huge_pages", lambda t: fresh_blocks.append(t.data_ptr()) or advise(t))
    x1, x2 = torch.rand(BIG), torch.rand(BIG)
    o1 = _fresh(x1)
    assert o1.untyped_storage().nbytes() >= mem.MIN_BYTES and fresh_blocks == [o1.data_ptr()]
    p1 = o1.data_ptr()
    del o1
    o2 = _orbit(x2)
    assert o2.data_ptr() == p1 and len(fresh_blocks) == 1  # the same block, no new allocation
    expected = _fresh(x2)
    assert expected.data_ptr() != p1 and torch.equal(o2, expected)


@pytest.mark.parametrize("holder", ["tensor", "slice", "autograd graph", "inference tensor"])
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
