"""Planar groups C_n (rotations) and D_n (rotations and reflections).

This is the one place where group maths lives: element indexing, the group law,
inverses and the conversion of an element to its affine map of the image plane.

Convention (see docs/spec.md §2):
    * element ``(k, r)`` of D_n is ``R_k ∘ F^r`` (flip first, then rotate) with
      index ``k + n * r``; C_n has only ``r = 0``; index 0 is the identity;
    * ``R_k`` rotates by ``2πk/n`` counter-clockwise *as displayed* (row 0 on top);
    * ``F`` is the horizontal flip ``torch.flip(x, dims=(-1,))``.

Matrices act on pixel coordinates ``(u, v) = (column, row)`` measured from the
image centre, so ``v`` grows downwards. The matrix of ``g`` maps a point of the
input to the point where it lands in ``g·x``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["Group", "CyclicGroup", "DihedralGroup", "as_group", "MAX_TABLE_ORDER"]

MAX_TABLE_ORDER = 2**14  # a Cayley table of this order holds 2.1 GB of int64
_SPEC_RE = re.compile(r"^\s*([CcDd])\s*(\d+)\s*$", re.ASCII)  # ASCII digits: "C４" is not C4


def _exact_cos_sin(k: int, n: int) -> tuple[float, float]:
    """cos and sin of 2πk/n, exact (0, ±1) at multiples of a quarter turn."""
    k %= n
    if (4 * k) % n == 0:
        quarter = (4 * k) // n
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][quarter]
    theta = 2.0 * math.pi * k / n
    return math.cos(theta), math.sin(theta)


@dataclass(frozen=True)
class Group:
    """A finite planar group: C_n (``reflections=False``) or D_n (``True``).

    Args:
        n: number of rotations, ``n >= 1``.
        reflections: whether the group contains the horizontal flip.

    Example:
        >>> g = Group(4, reflections=True)
        >>> g.name, g.order, g.compose(1, 4), g.inverse(1)
        ('D4', 8, 5, 3)
    """

    n: int
    reflections: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int):
            raise TypeError(f"group: n must be an int, got {type(self.n).__name__}")
        if self.n < 1:
            raise ValueError(f"group: n must be >= 1, got {self.n}")

    # -- naming -------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{'D' if self.reflections else 'C'}{self.n}"

    def __repr__(self) -> str:
        return f"Group('{self.name}')"

    def __str__(self) -> str:
        return self.name

    # -- elements -----------------------------------------------------------
    @property
    def order(self) -> int:
        """Number of elements |G|."""
        return self.n * (2 if self.reflections else 1)

    def __len__(self) -> int:
        return self.order

    @property
    def identity(self) -> int:
        return 0

    def element(self, index: int) -> tuple[int, int]:
        """Index → ``(k, r)``: rotation step and reflection bit."""
        self._check_index(index)
        return index % self.n, index // self.n

    def index(self, k: int, r: int = 0) -> int:
        """``(k, r)`` → index (``k`` is taken modulo n)."""
        if r not in (0, 1) or (r == 1 and not self.reflections):
            raise ValueError(
                f"group {self.name}: reflection bit must be 0{' or 1' if self.reflections else ''}, got {r}"
            )
        return (k % self.n) + self.n * r

    def angle(self, index: int) -> float:
        """Rotation angle of the element in radians (counter-clockwise)."""
        k, _ = self.element(index)
        return 2.0 * math.pi * k / self.n

    def compose(self, a: int, b: int) -> int:
        """Index of ``a ∘ b`` (apply ``b`` first). Uses ``F R_k F = R_{-k}``."""
        ka, ra = self.element(a)
        kb, rb = self.element(b)
        k = ka + (-kb if ra else kb)
        return self.index(k, ra ^ rb)

    def inverse(self, a: int) -> int:
        k, r = self.element(a)
        return a if r else self.index(-k, 0)

    def compose_indices(self, a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
        """Element-wise index of ``a ∘ b`` for int tensors (broadcast), O(numel), no table.

        Example:
            >>> Group(4, reflections=True).compose_indices(torch.tensor([1, 4]), torch.tensor([4, 1]))
            tensor([5, 7])
        """
        a = self._check_indices(a, "a")
        b = self._check_indices(torch.as_tensor(b, device=a.device), "b")
        n = self.n
        ka, ra, kb, rb = a % n, a // n, b % n, b // n
        k = torch.where(ra == 1, ka - kb, ka + kb) % n  # F R_k F = R_{-k}
        return k + n * (ra ^ rb)

    def inverse_indices(self, a: torch.Tensor) -> torch.Tensor:
        """Element-wise index of ``a⁻¹`` for an int tensor (reflections are their own inverse)."""
        a = self._check_indices(a, "a")
        return torch.where(a >= self.n, a, (-a) % self.n)

    @cached_property
    def cayley_table(self) -> torch.Tensor:
        """(N, N) int64 table, ``table[a, b] = index(a ∘ b)``.

        Raises:
            ValueError: ``N > MAX_TABLE_ORDER``: the table would not fit in memory; use
                :meth:`compose_indices`, which needs no table.
        """
        if self.order > MAX_TABLE_ORDER:
            raise ValueError(
                f"group {self.name}: the Cayley table would hold {self.order}² = {self.order**2:,} entries (order at "
                f"most {MAX_TABLE_ORDER}); "
                "use compose_indices(a, b), which needs no table"
            )
        ar = torch.arange(self.order)
        return self.compose_indices(ar[:, None], ar[None, :])

    @cached_property
    def inverse_table(self) -> torch.Tensor:
        """(N,) int64 table of inverse indices."""
        return self.inverse_indices(torch.arange(self.order))

    # -- geometry -----------------------------------------------------------
    def matrix(self, index: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """2×2 linear part of the element acting on centred pixel coordinates (u, v).

        A counter-clockwise rotation as displayed (v points down) is
        ``[[cos, sin], [-sin, cos]]``; the flip is ``diag(-1, 1)``; ``(k, r)`` is
        ``R_k @ F^r``. Multiples of 90° give exact 0 and ±1.
        """
        k, r = self.element(index)
        c, s = _exact_cos_sin(k, self.n)
        f = -1.0 if r else 1.0
        # R @ diag(f, 1)
        return ((c * f, s), (-s * f, c))

    def is_exact(self, index: int) -> bool:
        """True when the element's matrix has only 0 and ±1 entries (90° multiples, flips)."""
        return (4 * (index % self.n)) % self.n == 0

    @property
    def all_exact(self) -> bool:
        return all(self.is_exact(i) for i in range(self.order))

    def _check_indices(self, t: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dtype not in (
            torch.int32,
            torch.int64,
            torch.uint8,
            torch.int16,
            torch.int8,
        ):
            raise TypeError(
                f"group {self.name}: {name} must be an integer tensor of element indices, "
                f"got {getattr(t, 'dtype', type(t).__name__)}"
            )
        t = t.long()
        # range check only where it costs no device synchronisation
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.order):
            raise ValueError(
                f"group {self.name}: {name} must hold indices in [0, {self.order}), got values in [{int(t.min())}, "
                f"{int(t.max())}]"
            )
        return t

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"group {self.name}: element index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.order:
            raise ValueError(f"group {self.name}: element index must be in [0, {self.order}), got {index}")


def CyclicGroup(n: int) -> Group:  # noqa: N802 - reads like a type
    """C_n: the n rotations by multiples of 2π/n."""
    return Group(n, reflections=False)


def DihedralGroup(n: int) -> Group:  # noqa: N802
    """D_n: the n rotations and n reflections."""
    return Group(n, reflections=True)


def as_group(spec: str | Group, fn: str | None = None) -> Group:
    """Parse ``"C8"``, ``"d4"``, or pass a :class:`Group` through.

    Args:
        spec: the group.
        fn: name of the public function asking, put in front of error messages.

    Raises:
        TypeError: ``spec`` is neither a string nor a Group.
        ValueError: the string is not ``C<n>``/``D<n>`` with ``n >= 1``.
    """
    if isinstance(spec, Group):
        return spec
    prefix = f"{fn}: " if fn else ""
    if not isinstance(spec, str):
        raise TypeError(f"{prefix}group must be a string like 'C8' or 'D4' or a canon.Group, got {type(spec).__name__}")
    m = _SPEC_RE.match(spec)
    if m is None:
        raise ValueError(
            f"{prefix}group must be 'C<n>' (rotations) or 'D<n>' (rotations and flips), e.g. 'C8', 'D4'; cannot parse "
            f"{spec!r}"
        )
    n = int(m.group(2))
    if n < 1:
        raise ValueError(f"{prefix}group must have n >= 1, got {spec!r}")
    return Group(n, reflections=m.group(1).upper() == "D")
