"""PNG plots of a run (matplotlib, Agg backend): accuracy against angle, inputs beside canonical images."""

from __future__ import annotations

import math

import torch

from canon.functional import transform
from canon.groups import Group
from canon.train.checkpoint import write_atomic

MAX_GRID_COLUMNS = 16
LABELS = {
    "canonicalized": "canonicalized (ours)",
    "equivariant": "equivariant canonicalizer",
    "plain": "plain",
    "augmented": "plain + group augmentation",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(metrics: dict, group: Group, path: str) -> None:
    """Accuracy against the rotation of the test set, per method.

    Lines: every ``angle_step`` degrees where the metrics have them (``angle_acc``), markers:
    the group's own elements; reflected copies dashed (dihedral groups).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    for i, (name, m) in enumerate(metrics.items()):
        color = f"C{i}"
        table = m.get("angle_acc")
        for r in range(2 if group.reflections else 1):
            label = LABELS.get(name, name) + (" (flipped)" if r else "")
            els = [group.index(k, r) for k in range(group.n)] + [group.index(0, r)]
            angles = [360.0 * k / group.n for k in range(group.n + 1)]
            acc = [100.0 * m["per_element_acc"][e] for e in els]
            style = "-" if r == 0 else "--"
            if table is not None:
                line = table["flipped_acc"] if r else table["acc"]
                ax.plot(
                    [*table["angles_deg"], 360],
                    [100.0 * a for a in [*line, line[0]]],
                    style,
                    color=color,
                    label=label,
                    lw=1.3,
                )
                ax.plot(angles, acc, "o" if r == 0 else "s", color=color, ms=5, mfc="none" if r else color)
            else:
                ax.plot(angles, acc, "o" + style if r == 0 else "s" + style, color=color, label=label)
    ax.set_xlabel("rotation of the test set (degrees, counter-clockwise)")
    ax.set_ylabel("test accuracy (%)")
    ticks = sorted(
        {*(360.0 * k / group.n for k in range(0, group.n + 1, max(1, math.ceil(group.n / 12)))), *range(0, 361, 90)}
    )
    ax.set_xticks(ticks)
    ax.set_xlim(0, 360)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    step = next(
        (
            m["angle_acc"]["angles_deg"][1]
            for m in metrics.values()
            if "angle_acc" in m and len(m["angle_acc"]["angles_deg"]) > 1
        ),
        None,
    )
    ax.set_title(
        f"{group.name}: accuracy against rotation"
        + (f" (lines: every {step}°, markers: {group.name})" if step else ""),
        fontsize=9,
    )
    ax.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False
    )  # below the axes: no curve hidden
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


@torch.no_grad()
def plot_canonical_grid(
    model, test, group: Group, device, path: str, samples: int = 10, padding: str = "zeros"
) -> None:
    """One row per test sample, one column per group element: the transformed input beside its canonical image.

    Drawn as a single mosaic (one ``imshow``); groups of more than ``MAX_GRID_COLUMNS`` elements
    show that many elements, evenly spaced in index order, so the figure keeps a sane size.
    """
    plt = _pyplot()
    model.eval()
    # one sample of each class first (the test set is sorted by class), then the next ones
    firsts = [int(torch.nonzero(test.y == c)[0]) for c in torch.unique(test.y).tolist()]
    seen = set(firsts)
    rest = [i for i in range(len(test)) if i not in seen]
    pick = (firsts + rest)[: min(samples, len(test))]
    n = len(pick)
    x = test.x[pick].to(device)
    C, H, W = x.shape[1:]
    gap = max(1, H // 8)
    cell_w = 2 * W + 3 * gap
    N = group.order
    elements = (
        list(range(N))
        if N <= MAX_GRID_COLUMNS
        else sorted({i * N // MAX_GRID_COLUMNS for i in range(MAX_GRID_COLUMNS)})
    )
    mosaic = torch.full((n * (H + gap) + gap, len(elements) * cell_w, 3 if C == 3 else 1), 0.5)
    for col, e in enumerate(elements):
        xt = transform(x, e, group, padding)
        xc = model.canonicalizer(xt)
        for b in range(n):
            top = gap + b * (H + gap)
            for j, img in enumerate((xt[b], xc[b])):
                left = col * cell_w + gap + j * (W + gap)
                im = img.float().cpu()
                mosaic[top : top + H, left : left + W] = (im if C == 3 else im[:1]).permute(1, 2, 0).clamp(0, 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(elements) * 2), max(2.0, 0.45 * n * 2)))
    ax.imshow(
        mosaic.squeeze(-1).numpy() if C != 3 else mosaic.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
    )
    ax.set_xticks([col * cell_w + cell_w / 2 for col in range(len(elements))])
    ax.set_xticklabels(
        [f"{round(math.degrees(group.angle(e)))}°" + (" flip" if group.element(e)[1] else "") for e in elements],
        fontsize=7,
    )
    ax.set_yticks([])
    ax.set_title("test input turned by each element (left) and its canonical image (right)", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)
