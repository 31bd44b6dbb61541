"""Make an existing classifier rotation-robust with one wrapper: ``canon.Canonicalized``.

The classifier is a torchvision ResNet-18 when torchvision imports, else timm's, else the
bundled small CNN (``--backbone`` picks one). It is used unchanged: the wrapper puts a
canonicalizer (a small plain CNN scoring the C4 orbit) in front of it. Pretrained
weights load the usual way (``torchvision.models.resnet18(weights="DEFAULT")``, from
your local cache); here the model starts from random weights and is fine-tuned on
scikit-learn's 8×8 digits, upsampled to 32×32 RGB.

The script trains the plain classifier and the wrapped one on upright digits for the
same number of steps, then reports for each: accuracy on the upright test digits, the
C4-average accuracy (test set turned by 0°, 90°, 180°, 270°) and the share of test
digits whose prediction is the same for all four turns. For the wrapped model that share
is 100% by construction, and the script checks that its logits agree bit for bit.

    python examples/robust_classifier.py [--backbone auto|torchvision|timm|small] [--steps 300]

``--tiny`` runs a few steps on a few digits (what the tests do).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

import canon
from canon.data import load_dataset
from canon.networks import ConvEncoder
from canon.predictors import SmallCNN


def build_classifier(backbone: str, num_classes: int) -> tuple[torch.nn.Module, str]:
    """The classifier to make robust; any (B, 3, H, W) → (B, classes) model works."""
    if backbone in ("auto", "torchvision"):
        try:
            import torchvision

            return torchvision.models.resnet18(weights=None, num_classes=num_classes), "torchvision resnet18"
        except Exception as e:
            if backbone == "torchvision":
                raise
            print(f"torchvision unavailable ({type(e).__name__}), trying timm")
    if backbone in ("auto", "timm"):
        try:
            import timm

            return timm.create_model("resnet18", pretrained=False, num_classes=num_classes), "timm resnet18"
        except Exception as e:
            if backbone == "timm":
                raise
            print(f"timm unavailable ({type(e).__name__}), using the bundled small CNN")
    return SmallCNN(3, num_classes, width=32), "canon.predictors.SmallCNN"


def as_rgb32(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1).contiguous()


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad():
        logits = [model(canon.transform(x, g, "C4")) for g in range(4)]
    preds = torch.stack([lg.argmax(1) for lg in logits])
    return {
        "upright": (preds[0] == y).float().mean().item(),
        "c4_average": (preds == y).float().mean().item(),
        "invariance_rate": (preds == preds[0]).all(0).float().mean().item(),
        "logits_identical": all(torch.equal(lg, logits[0]) for lg in logits),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="auto", choices=("auto", "torchvision", "timm", "small"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--tiny", action="store_true", help="a few steps on a few digits (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    train, test = load_dataset("digits", test_fraction=0.2, seed=args.seed)
    if args.tiny:
        train, test = train.subset(torch.arange(64)), test.subset(torch.arange(16))
    xtr, xte = as_rgb32(train.x), as_rgb32(test.x)
    steps, batch = (2, 16) if args.tiny else (args.steps, 64)

    classifier, name = build_classifier(args.backbone, train.num_classes)
    plain = copy.deepcopy(classifier)
    # the one line: any classifier, a small canonicalizer scoring the C4 orbit of each input
    robust = canon.Canonicalized(
        classifier, canon.OrbitCanonicalizer(ConvEncoder(3, out_dim=32, hidden=16), "C4", size=16, prior_beta=10.0)
    )

    gen = torch.Generator().manual_seed(args.seed)
    for label, model in (("plain", plain), ("canonicalized", robust)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(train), (batch,), generator=gen)
            task = F.cross_entropy(model(xtr[idx]), train.y[idx])
            # the canonicalized model adds its prior and contrastive losses (weights 1 and 0.1)
            loss = model.loss(task) if isinstance(model, canon.Canonicalized) else task
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"{label}: trained {steps} steps, last loss {loss.item():.3f}")

    results = {label: evaluate(model, xte, test.y) for label, model in (("plain", plain), ("canonicalized", robust))}
    print(f"classifier: {name}; {len(test)} test digits")
    for label, r in results.items():
        print(
            f"{label:>14}: upright {r['upright']:.1%}  C4-average {r['c4_average']:.1%}  "
            f"same prediction for all 4 turns {r['invariance_rate']:.1%}  logits bit-identical {r['logits_identical']}"
        )
    if not results["canonicalized"]["logits_identical"]:
        raise SystemExit("the canonicalized classifier is not exactly C4-invariant")
    results["classifier"] = name
    return results


if __name__ == "__main__":
    main()
