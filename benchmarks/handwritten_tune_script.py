"""What a user would write instead of this project: Ray Tune + OptunaSearch + ASHA over PyTorch's MNIST example.

    python benchmarks/handwritten_tune_script.py DATA_ROOT [--trials 4] [--epochs 2] [--cpus 2]

DATA_ROOT holds torchvision's MNIST (``MNIST/raw`` uncompressed, as ``torchvision.datasets.MNIST`` reads it). The
way the tutorials write it: the example network (``time_to_99.TutorialNet``), per-sample ``ToTensor`` and
``Normalize`` through a ``DataLoader``, 55,000 training and 5,000 validation images, one CPU a trial, TPE over the
learning rate, batch size and optimizer, ASHA cutting at epoch 1, a checkpoint each epoch, and the best trial's
checkpoint tested once on the 10,000 test images. ``benchmarks/handwritten_tune.py`` times it as a whole command.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_99 import TutorialNet  # noqa: E402  (PyTorch's examples/mnist network)


def loaders(root: str, batch_size: int):
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST(root, train=True, download=False, transform=transform)
    train, val = torch.utils.data.random_split(full, [55_000, 5_000], generator=torch.Generator().manual_seed(0))
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=1000))


def accuracy(model: torch.nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def train_mnist(config: dict) -> None:
    torch.set_num_threads(1)
    train, val = loaders(config["root"], config["batch_size"])
    model = TutorialNet()
    optimizer = (torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.SGD)(model.parameters(),
                                                                                          lr=config["lr"])
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.nll_loss(model(x), y).backward()
            optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
            tune.report({"val_acc": accuracy(model, val), "epoch": epoch},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False)
    space = {"lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([32, 64, 128]),
             "optimizer": tune.choice(["adam", "sgd"]), "epochs": args.epochs, "root": args.root}
    tuner = tune.Tuner(
        tune.with_resources(train_mnist, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=args.trials,
                                    search_alg=OptunaSearch(seed=0),
                                    scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1, time_attr="epoch")),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="handwritten-"), verbose=0),
    )
    best = tuner.fit().get_best_result()
    from torchvision import datasets, transforms

    test = datasets.MNIST(args.root, train=False, download=False,
                          transform=transforms.Compose([transforms.ToTensor(),
                                                        transforms.Normalize((0.1307,), (0.3081,))]))
    model = TutorialNet()
    with best.checkpoint.as_directory() as folder:
        model.load_state_dict(torch.load(os.path.join(folder, "model.pt")))
    print(f"best: {best.config['optimizer']} lr={best.config['lr']:.2g} batch {best.config['batch_size']}, "
          f"val_acc {best.metrics['val_acc']:.4f}, test_acc "
          f"{accuracy(model, torch.utils.data.DataLoader(test, batch_size=1000)):.4f}")


if __name__ == "__main__":
    main()
