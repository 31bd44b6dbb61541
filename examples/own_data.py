"""Train a rotation-invariant classifier on your own images, read through a torch Dataset.

Your data: one folder per class, one image per file (``.npy`` arrays (H, W) or (H, W, C),
and ``.png``/``.jpg`` when Pillow is installed), all of the same square size:

    my_data/train/<class name>/*.npy      my_data/test/<class name>/*.npy

    python examples/own_data.py --data my_data --group C4 --epochs 10

Without ``--data`` the script writes a small synthetic data set of that layout (glyphs
drawn upright) to a temporary folder and uses it. Training sees upright images only;
the test reports accuracy on the upright and on the C4-rotated test images, and checks
that the predictions are exactly invariant (an exact group: C2, C4, D1, D2 or D4).
``--tiny`` runs a few steps on a few images (what the tests do).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import canon
from canon.networks import ConvEncoder
from canon.predictors import SmallCNN


class ImageFolderDataset(Dataset):
    """Images from ``root/<class>/<file>`` as float (C, H, W) tensors in [0, 1], with int labels."""

    EXTENSIONS = (".npy", ".png", ".jpg", ".jpeg")

    def __init__(self, root: str | Path, classes: list[str] | None = None):
        root = Path(root)
        self.classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files = [
            (f, label)
            for label, c in enumerate(self.classes)
            for f in sorted((root / c).iterdir())
            if f.suffix.lower() in self.EXTENSIONS
        ]
        if not self.files:
            raise FileNotFoundError(f"ImageFolderDataset: no {self.EXTENSIONS} files under {root}/<class>/")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        if path.suffix == ".npy":
            img = np.load(path)
        else:
            from PIL import Image  # optional: only for image files

            img = np.asarray(Image.open(path))
        x = torch.as_tensor(np.asarray(img, dtype=np.float32) / (255.0 if img.dtype == np.uint8 else 1.0))
        x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)  # (C, H, W)
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"ImageFolderDataset: {path} is {tuple(x.shape[-2:])}; exact rotation invariance needs square images"
            )
        return x, label


GLYPHS = {  # 3×3 patterns, none of them symmetric under a quarter turn
    "ell": [[1, 0, 0], [1, 0, 0], [1, 1, 0]],
    "tee": [[1, 1, 1], [0, 1, 0], [0, 1, 0]],
    "zed": [[1, 1, 0], [0, 1, 0], [0, 1, 1]],
    "hook": [[1, 1, 0], [1, 0, 0], [0, 0, 0]],
}


def write_synthetic(root: Path, per_class: int, size: int, seed: int) -> None:
    """Upright glyphs, randomly scaled, shifted and noised, saved as uint8 .npy files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(per_class // 4, 2))):
        for name, pattern in GLYPHS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                cell = int(rng.integers(size // 6, size // 4 + 1))
                glyph = np.kron(np.array(pattern, dtype=np.float32), np.ones((cell, cell), dtype=np.float32))
                img = rng.uniform(0, 0.2, (size, size)).astype(np.float32)
                top, left = rng.integers(0, size - 3 * cell + 1, 2)
                img[top : top + 3 * cell, left : left + 3 * cell] += 0.8 * glyph
                np.save(root / split / name / f"{k:04d}.npy", (np.clip(img, 0, 1) * 255).astype(np.uint8))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder with train/ and test/ subfolders (default: a synthetic set)")
    p.add_argument("--group", default="C4", help="an exact group (C2, C4, D1, D2, D4) for the exact-invariance check")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--size", type=int, default=24, help="side of the synthetic images")
    p.add_argument("--tiny", action="store_true", help="a few steps on a few images (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            write_synthetic(root, per_class=8 if args.tiny else 200, size=args.size, seed=args.seed)
        train, test = ImageFolderDataset(root / "train"), None
        test = ImageFolderDataset(root / "test", classes=train.classes)
        x0, _ = train[0]
        C = x0.shape[0]
        loader = DataLoader(train, batch_size=16 if args.tiny else 64, shuffle=True)

        model = canon.Canonicalized(
            SmallCNN(C, len(train.classes), width=8 if args.tiny else 32),
            canon.OrbitCanonicalizer(
                ConvEncoder(C, out_dim=32, hidden=8 if args.tiny else 16), args.group, prior_beta=10.0
            ),
        )
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        epochs = 1 if args.tiny else args.epochs
        for epoch in range(epochs):
            model.train()
            for step, (x, y) in enumerate(loader):
                loss = model.loss(torch.nn.functional.cross_entropy(model(x), y))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if args.tiny and step == 1:
                    break
            print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")

        model.eval()
        xs, ys = map(torch.stack, zip(*[(x, torch.tensor(y)) for x, y in test]))
        G = canon.as_group(args.group)
        with torch.no_grad():
            preds = [model(canon.transform(xs, g, G)).argmax(1) for g in range(G.order)]
            logits = [model(canon.transform(xs, g, G)) for g in range(G.order)]
        upright = (preds[0] == ys).float().mean().item()
        average = torch.stack([(p == ys).float().mean() for p in preds]).mean().item()
        exact = all(torch.equal(lg, logits[0]) for lg in logits)
        print(f"test: {len(test)} images, classes {train.classes}")
        print(f"accuracy upright {upright:.1%}, {G.name}-average {average:.1%}")
        print(f"predictions identical for every element of {G.name} (logits bit for bit): {exact}")
        if not exact:
            raise SystemExit(f"{G.name} invariance failed")
        return {"upright": upright, "average": average, "exact_invariance": exact}


if __name__ == "__main__":
    main()
