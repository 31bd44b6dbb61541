"""Training and evaluation of canonicalizers: ``python -m canon.train`` (see docs/training.md).

* :func:`main` — the command line (also ``canon-train`` and ``torchrun -m canon.train``);
* :func:`run` — the same from Python with a resolved configuration dict;
* :func:`load_checkpoint` — the trained canonicalizer, predictor and baselines of a run.
"""

from canon.train.cli import main, run
from canon.train.config import build_parser, resolve
from canon.train.loop import CanonicalizedClassifier, TrainedModels, load_checkpoint

__all__ = ["main", "run", "build_parser", "resolve", "load_checkpoint", "TrainedModels", "CanonicalizedClassifier"]
