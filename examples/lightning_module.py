"""A PyTorch Lightning module around ``canon.Canonicalized`` (Lightning is optional: ``pip install lightning``).

``CanonicalizedClassifier`` trains a canonicalized classifier with the task loss plus
the canonicalizer's prior and contrastive losses (``model.loss``), logs each term, and
validates on the C4-rotated copies of the validation set: accuracy per turn and the
share of samples whose prediction is the same for all turns (1.0 for an exact group).
The data are scikit-learn's 8×8 digits (``canon.data.load_dataset("digits")``); the
predictor and canonicalizer get separate learning rates, as in ``python -m canon.train``.

    python examples/lightning_module.py [--epochs 5]       # --tiny: two batches (tests)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import canon
from canon.data import load_dataset
from canon.networks import ConvEncoder
from canon.predictors import SmallCNN

try:
    import lightning as L
except ImportError:  # the older package name
    try:
        import pytorch_lightning as L
    except ImportError:
        raise SystemExit(
            "examples/lightning_module.py needs PyTorch Lightning: pip install lightning (then run it again)"
        ) from None


class CanonicalizedClassifier(L.LightningModule):
    def __init__(
        self, num_classes: int, in_channels: int = 1, group: str = "C4", lr: float = 3e-3, canon_lr: float = 3e-3
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = canon.Canonicalized(
            SmallCNN(in_channels, num_classes, width=16),
            canon.OrbitCanonicalizer(ConvEncoder(in_channels, out_dim=32, hidden=16), group, prior_beta=10.0),
        )
        self.group = canon.as_group(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        task = F.cross_entropy(self.model(x), y)
        terms = self.model.losses()
        self.log_dict({"train/task": task, **{f"train/{k}": v for k, v in terms.items()}}, on_epoch=True, on_step=False)
        return self.model.loss(task)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        preds = torch.stack([self.model(canon.transform(x, g, self.group)).argmax(1) for g in range(self.group.order)])
        self.log("val/acc_upright", (preds[0] == y).float().mean())
        self.log(f"val/acc_{self.group.name}_average", (preds == y).float().mean())
        self.log("val/invariance_rate", (preds == preds[0]).all(0).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(
            [
                {"params": self.model.predictor.parameters(), "lr": self.hparams.lr},
                {"params": self.model.canonicalizer.parameters(), "lr": self.hparams.canon_lr},
            ]
        )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="two training batches, one validation batch (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    L.seed_everything(args.seed, verbose=False)

    train, val = load_dataset("digits", test_fraction=0.2, seed=args.seed)
    train_loader = DataLoader(TensorDataset(train.x, train.y), batch_size=64, shuffle=True)
    val_loader = DataLoader(TensorDataset(val.x, val.y), batch_size=256)
    module = CanonicalizedClassifier(train.num_classes, in_channels=train.x.shape[1])
    trainer = L.Trainer(
        max_epochs=1 if args.tiny else args.epochs,
        limit_train_batches=2 if args.tiny else 1.0,
        limit_val_batches=1 if args.tiny else 1.0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_loader, val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for k in sorted(metrics):
        print(f"{k}: {metrics[k]:.4f}")
    if metrics["val/invariance_rate"] != 1.0:
        raise SystemExit("C4 invariance failed")
    return metrics


if __name__ == "__main__":
    main()
