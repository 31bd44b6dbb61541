"""canon: fast, exact optimization-based canonicalization for model-agnostic equivariance.

See docs/spec.md: a non-equivariant encoder scores every rotated/reflected copy of an input,
the best copy is the canonical input for any downstream model.
"""

from canon import export, losses
from canon._version import __version__
from canon.backend import get_backend, set_backend, use_backend
from canon.functional import (
    Selection,
    SelectionLosses,
    canonicalize,
    invert,
    invert_boxes,
    invert_points,
    orbit,
    select,
    select_canonicalize,
    select_losses,
    transform,
)
from canon.graphs import GraphedCanonicalizer
from canon.groups import CyclicGroup, DihedralGroup, Group, as_group
from canon.modules import OrbitCanonicalizer
from canon.wrappers import Canonicalized

__all__ = [
    "Group",
    "CyclicGroup",
    "DihedralGroup",
    "as_group",
    "Selection",
    "SelectionLosses",
    "orbit",
    "select",
    "select_losses",
    "select_canonicalize",
    "canonicalize",
    "invert",
    "invert_points",
    "invert_boxes",
    "transform",
    "losses",
    "export",
    "OrbitCanonicalizer",
    "GraphedCanonicalizer",
    "Canonicalized",
    "get_backend",
    "set_backend",
    "use_backend",
    "__version__",
]
