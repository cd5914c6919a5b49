"""TensorFleet's three model types, trained for real as a ``train`` job.

    corral submit --kind train --workdir examples --entry tensorfleet_models:fit \\
        --config examples/tensorfleet.json

``fit(config)`` trains the model that ``config["model"]`` names on scikit-learn's bundled
digits and reports its training loss and validation accuracy as it goes:

- ``neural_network``: an MLP, one ``partial_fit`` pass per epoch (``epochs``);
- ``gradient_boosting``: boosted trees, one stage per iteration (``iterations``), read back
  with ``staged_predict_proba``;
- ``random_forest``: trees added ``trees_per_iteration`` at a time (``warm_start``).

It returns its final loss and accuracy as the job's result. Needs scikit-learn.
"""

from __future__ import annotations

from typing import Any

from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from corral import sdk


def fit(config: dict[str, Any]) -> dict[str, Any]:
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    classes = sorted(set(y))
    kind = config.get("model", "neural_network")
    seed = int(config.get("seed", 0))

    def measure(step: int, proba_tr: Any, predicted_va: Any) -> tuple[float, float]:
        loss = float(log_loss(y_tr, proba_tr, labels=classes))
        accuracy = float(accuracy_score(y_va, predicted_va))
        sdk.report(step=step, loss=loss, accuracy=accuracy)
        return loss, accuracy

    if kind == "neural_network":
        hidden, lr = int(config.get("hidden", 64)), float(config.get("lr", 0.01))
        model = MLPClassifier(hidden_layer_sizes=(hidden,), learning_rate_init=lr,
                              random_state=seed)  # fmt: skip
        for epoch in range(int(config.get("epochs", 10))):
            model.partial_fit(x_tr, y_tr, classes=classes)
            loss, accuracy = measure(epoch, model.predict_proba(x_tr), model.predict(x_va))
    elif kind == "gradient_boosting":
        gb = GradientBoostingClassifier(n_estimators=int(config.get("iterations", 20)),
                                        max_depth=int(config.get("max_depth", 2)),
                                        random_state=seed)  # fmt: skip
        gb.fit(x_tr, y_tr)
        stages = zip(gb.staged_predict_proba(x_tr), gb.staged_predict(x_va), strict=True)
        for i, (proba, predicted) in enumerate(stages):
            loss, accuracy = measure(i, proba, predicted)
    elif kind == "random_forest":
        step_trees = int(config.get("trees_per_iteration", 5))
        rf = RandomForestClassifier(n_estimators=0, warm_start=True, random_state=seed)
        for i in range(int(config.get("iterations", 10))):
            rf.n_estimators += step_trees
            rf.fit(x_tr, y_tr)
            loss, accuracy = measure(i, rf.predict_proba(x_tr), rf.predict(x_va))
    else:
        raise ValueError(f"model: neural_network, gradient_boosting or random_forest, not {kind!r}")
    return {"model": kind, "loss": loss, "accuracy": accuracy}
