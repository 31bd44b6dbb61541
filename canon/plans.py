"""Arguments → checked settings and device tables, once per distinct argument set.

The one home of what every call derives from its non-tensor arguments: the parsed group, the
validated size, crop, padding and interpolation, the view tables (:func:`canon.geometry.view_tables`),
the antialias tables and the effective padding. The functional API and the modules
(:class:`canon.OrbitCanonicalizer`) both call these functions; caching follows the one policy of
:class:`canon._cache.Cache` (nothing kept while tracing). Per call, only the tensors are checked.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from canon._cache import Cache
from canon._checks import (
    INTERPOLATIONS,
    PADDINGS,
    check_choice,
    check_crop_ratio,
    check_positive,
    check_size,
)
from canon.geometry import AntialiasTables, ViewTables, antialias_tables, view_tables, views_in_range
from canon.groups import Group, as_group

__all__ = [
    "OrbitPlan",
    "TransformPlan",
    "SelectSettings",
    "orbit_plan",
    "transform_plan",
    "select_settings",
    "losses_settings",
    "cached",
    "kind",
]

# Plans of the functional API, keyed by the arguments themselves (and the types of number-like ones, :func:`kind`).
_PLANS = Cache(limit=1024)


def kind(value):
    """The type of a plan-key value that may be a number (a pair's item types for a pair): ``True == 1 ==
    1.0`` hash alike, so without it ``beta=True`` would find the plan of ``beta=1`` and skip its checks."""
    return tuple(map(type, value)) if type(value) in (tuple, list) else type(value)


def cached(key, build):
    """``build()`` cached under ``key`` (which holds the :func:`kind` of every number-like value)."""
    return _PLANS.get(key, build)


class OrbitPlan(NamedTuple):
    """What an orbit call needs besides the images."""

    tables: ViewTables
    size: tuple[int, int]  # (h, w) of the views
    padding: str  # the effective padding (see :func:`_effective_padding`)
    antialias: AntialiasTables | None  # None: plain views


class TransformPlan(NamedTuple):
    """What a full-resolution transform (canonicalize, invert, transform) needs besides the images."""

    group: Group
    tables: ViewTables
    padding: str


class SelectSettings(NamedTuple):
    """The checked settings of a selection."""

    beta: float
    score: str
    straight_through: bool
    tau: float


def orbit_plan(
    group, in_hw, size, crop_ratio, padding, interpolation, out_dtype, device, fn, antialias=True
) -> OrbitPlan:
    """Check one orbit setting and build its tables (not cached: see :func:`cached`)."""
    g = as_group(group, fn)
    h, w = check_size(size, in_hw, fn)
    crop_ratio = check_crop_ratio(crop_ratio, fn)
    check_choice(padding, PADDINGS, "padding", fn)
    check_choice(interpolation, INTERPOLATIONS, "interpolation", fn)
    if not isinstance(antialias, bool):
        raise TypeError(f"{fn}: antialias must be True or False, got {antialias!r}")
    if out_dtype is not None and out_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{fn}: out_dtype must be a floating dtype, got {out_dtype}")
    tables = view_tables(g, in_hw, (h, w), crop_ratio, device)
    aa = antialias_tables(g, in_hw, (h, w), crop_ratio, device) if antialias and interpolation == "bilinear" else None
    padding = padding if aa is not None else _effective_padding(padding, tables.exact, g, in_hw, (h, w), crop_ratio)
    return OrbitPlan(tables, (h, w), padding, aa)


def transform_plan(group, hw, padding, interpolation, device, inverse, fn) -> TransformPlan:
    """Check one full-resolution transform setting and build its tables (row g of the ``inverse`` tables
    holds the view of g⁻¹)."""
    g = as_group(group, fn)
    check_choice(padding, PADDINGS, "padding", fn)
    check_choice(interpolation, INTERPOLATIONS, "interpolation", fn)
    tables = view_tables(g, hw, hw, 1.0, device, inverse=inverse)
    return TransformPlan(g, tables, _effective_padding(padding, tables.exact, g, hw, hw, 1.0))


def select_settings(beta, score, straight_through, tau, fn) -> SelectSettings:
    beta = check_positive(beta, "beta", fn)
    tau = check_positive(tau, "tau", fn)
    check_choice(score, ("cosine", "dot"), "score", fn)
    return SelectSettings(beta, score, bool(straight_through), tau)


def losses_settings(contrastive, prior_beta, fn) -> tuple[str, float]:
    check_choice(contrastive, ("normalized", "raw"), "contrastive", fn)
    return contrastive, check_positive(prior_beta, "prior_beta", fn)


def _effective_padding(padding: str, exact: bool, g: Group, in_hw, out_hw, crop_ratio) -> str:
    # Exact views that never leave the input (quarter turns of square images, flips) do
    # not depend on the padding; "zeros" lets the GPU backward use its gather (no atomics).
    if exact and padding != "zeros" and views_in_range(g, in_hw, out_hw, crop_ratio):
        return "zeros"
    return padding
