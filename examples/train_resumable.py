"""A PyTorch training run that resumes from its last checkpoint: on another worker after its
own died, or run again by hand.

    python examples/train_resumable.py --epochs 20
    corral submit --workdir examples -- python train_resumable.py --epochs 20

A small MLP learns scikit-learn's bundled digits (8x8 images, nothing downloaded) on the
CPU. Each epoch it reports its loss and validation accuracy (``corral.sdk.report``) and keeps
its model and optimizer as a checkpoint in safetensors (``corral.sdk.state``); at its start
it asks for the newest one (``resume_state``) and goes on from the epoch after it.
Needs torch, safetensors and scikit-learn.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from corral import sdk
from corral.sdk.state import checkpoint_state, resume_state


def _state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The model's weights and the optimizer's momentum, all tensors, for safetensors."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    for n, p in enumerate(model.parameters()):
        buf = opt.state[p].get("momentum_buffer")
        if buf is not None:
            state[f"momentum.{n}"] = buf
    return state


def _load(
    model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, torch.Tensor]
) -> None:
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                           if k.startswith("model.")})  # fmt: skip
    for n, p in enumerate(model.parameters()):
        if f"momentum.{n}" in state:
            opt.state[p]["momentum_buffer"] = state[f"momentum.{n}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    x_tr, x_va = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(x_va, dtype=torch.float32)
    y_tr, y_va = torch.tensor(y_tr), torch.tensor(y_va)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    start = 0
    found = resume_state()
    if found is not None:
        step, state = found
        _load(model, opt, state)
        start = step + 1
        print(f"resuming at epoch {start}", flush=True)

    for epoch in range(start, args.epochs):
        perm = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            train_loss = torch.nn.functional.cross_entropy(model(x_tr), y_tr).item()
            accuracy = (model(x_va).argmax(1) == y_va).float().mean().item()
        sdk.report(step=epoch, loss=train_loss, accuracy=accuracy)
        checkpoint_state(_state(model, opt), step=epoch)
    with torch.no_grad():
        accuracy = (model(x_va).argmax(1) == y_va).float().mean().item()
    sdk.set_result({"accuracy": accuracy, "epochs": args.epochs, "started_at_epoch": start})
    print(f"done: accuracy={accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
