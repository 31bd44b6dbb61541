"""Group law, inverses, parsing and the element → affine map conversion."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import canon
from canon.groups import Group, as_group

groups = st.builds(Group, st.integers(1, 24), st.booleans())


def _mat(g: Group, i: int) -> torch.Tensor:
    return torch.tensor(g.matrix(i), dtype=torch.float64)


@given(groups, st.data())
def test_matrix_is_a_homomorphism(g, data):
    a = data.draw(st.integers(0, g.order - 1))
    b = data.draw(st.integers(0, g.order - 1))
    assert torch.allclose(_mat(g, g.compose(a, b)), _mat(g, a) @ _mat(g, b), atol=1e-12)


@given(groups, st.data())
def test_group_axioms(g, data):
    a, b, c = (data.draw(st.integers(0, g.order - 1)) for _ in range(3))
    assert g.compose(a, g.compose(b, c)) == g.compose(g.compose(a, b), c)
    assert g.compose(a, g.inverse(a)) == 0 == g.compose(g.inverse(a), a)
    assert g.compose(0, a) == a == g.compose(a, 0)
    k, r = g.element(a)
    assert g.index(k, r) == a


@given(groups)
def test_matrices_distinct_orthogonal_and_exact(g):
    mats = [_mat(g, i) for i in range(g.order)]
    for i, m in enumerate(mats):
        assert torch.allclose(m @ m.T, torch.eye(2, dtype=torch.float64), atol=1e-12)
        assert math.isclose(torch.det(m).item(), -1.0 if i >= g.n else 1.0, abs_tol=1e-12)
        if g.is_exact(i):
            assert set(m.flatten().tolist()) <= {-1.0, 0.0, 1.0}
    for i in range(g.order):
        for j in range(i):
            assert not torch.allclose(mats[i], mats[j], atol=1e-9)


def test_conventions():
    g = as_group("D4")
    # counter-clockwise as displayed, v pointing down: R_1 maps (u, v) = (1, 0) to (0, -1) (up)
    assert g.matrix(1) == ((0.0, 1.0), (-1.0, 0.0))
    assert g.matrix(4) == ((-1.0, 0.0), (0.0, 1.0))  # flip
    assert g.element(5) == (1, 1) and g.compose(1, 4) == 5  # R_1 ∘ F
    assert g.compose(4, 1) == g.index(-1, 1)  # F ∘ R_1 = R_{-1} ∘ F
    assert as_group("C8").order == 8 and as_group(" d3 ").order == 6 and as_group(g) is g
    assert canon.DihedralGroup(1).order == 2 and canon.CyclicGroup(1).order == 1
    assert torch.equal(g.cayley_table[g.inverse_table, torch.arange(8)], torch.zeros(8, dtype=torch.int64))


@pytest.mark.parametrize("spec", ["C0", "D0", "E4", "C", "4", "C-2", "CC4", "", "C4.5"])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="group"):
        as_group(spec)


def test_bad_types():
    with pytest.raises(TypeError, match="group"):
        as_group(4)
    with pytest.raises(TypeError):
        Group(2.0)
    with pytest.raises(ValueError, match=">= 1"):
        Group(0)
    with pytest.raises(ValueError, match="index"):
        as_group("C4").element(4)
    with pytest.raises(ValueError, match="reflection"):
        as_group("C4").index(0, 1)
