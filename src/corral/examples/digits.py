"""The main job: train a small neural network on scikit-learn's bundled digits data set.

Real training, no download: 1,797 8x8 images of handwritten digits ship with scikit-learn.
Each epoch is one pass of ``MLPClassifier.partial_fit`` over the training split; the job
reports training log-loss and validation accuracy per epoch through ``corral.sdk`` and
ends with its final figures as the job's result.

    python -m corral.examples.digits --hidden 64 --lr 0.01 --epochs 10 --seed 0
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from itertools import product
from typing import Any

from corral import sdk

# The sweep `corral up --demo` runs: one job per setting.
SWEEP_HIDDEN = (32, 64, 128)
SWEEP_LR = (0.01, 0.001)


def sweep(epochs: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """The demo's hyper-parameter settings, one dict per job."""
    return [
        {"hidden": h, "lr": lr, "epochs": epochs, "seed": seed}
        for h, lr in product(SWEEP_HIDDEN, SWEEP_LR)
    ]


def command(params: dict[str, Any], python: str = "python") -> list[str]:
    """The argv that runs this module with ``params``."""
    argv = [python, "-m", "corral.examples.digits"]
    for key in ("hidden", "lr", "epochs", "seed"):
        if key in params:
            argv += [f"--{key}", str(params[key])]
    return argv


def train(hidden: int, lr: float, epochs: int, seed: int) -> dict[str, Any]:
    try:
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.metrics import accuracy_score, log_loss
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier
    except ImportError as exc:
        raise SystemExit(
            f"this example needs scikit-learn ({exc}): pip install 'corral[examples]'"
        ) from None

    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixel intensities are 0..16
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    classes = np.unique(y)
    model = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        learning_rate_init=lr,
        batch_size=64,
        random_state=seed,
    )
    print(
        f"digits: {len(x_train)} train / {len(x_val)} validation images, "
        f"hidden={hidden} lr={lr} epochs={epochs} seed={seed}",
        flush=True,
    )
    # Under Corral, each epoch's model is its checkpoint: a run whose worker died goes on
    # elsewhere from its last epoch. (By hand, runs of other settings would share one
    # local directory of checkpoints, so it keeps none.)
    start = 1
    ck = sdk.resume() if sdk.job_id() else None
    if ck is not None:
        model = pickle.loads(ck.read_bytes())
        start = ck.step + 1
        print(f"resuming at epoch {start} from the checkpoint of epoch {ck.step}", flush=True)
    for epoch in range(start, epochs + 1):
        model.partial_fit(x_train, y_train, classes=classes)
        loss = float(log_loss(y_train, model.predict_proba(x_train), labels=classes))
        accuracy = float(accuracy_score(y_val, model.predict(x_val)))
        sdk.report(step=epoch, loss=round(loss, 6), accuracy=round(accuracy, 6))
        if sdk.job_id():
            sdk.checkpoint(pickle.dumps(model), step=epoch)
    loss = float(log_loss(y_train, model.predict_proba(x_train), labels=classes))
    accuracy = float(accuracy_score(y_val, model.predict(x_val)))
    return {"loss": loss, "accuracy": accuracy, "resumed_at_epoch": start if start > 1 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corral.examples.digits", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (one layer)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.hidden < 1 or args.epochs < 1 or args.lr <= 0:
        parser.error("--hidden and --epochs must be >= 1 and --lr > 0")
    started = time.perf_counter()
    final = train(args.hidden, args.lr, args.epochs, args.seed)
    params = {"hidden": args.hidden, "lr": args.lr, "epochs": args.epochs, "seed": args.seed}
    result = {**params, **final, "train_seconds": round(time.perf_counter() - started, 3)}
    sdk.set_result(result)
    print(f"done: loss={final['loss']:.4f} accuracy={final['accuracy']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
