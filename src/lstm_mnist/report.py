"""What a trained classifier gets wrong, as pictures and tables: computed on the test set."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


@dataclass
class Predictions:
    images: torch.Tensor  # (N, 28, 28) in [0, 1]
    labels: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N, num_classes)


@torch.no_grad()
def predict_all(net: nn.Module, loader: DataLoader) -> Predictions:
    net.eval()
    images, labels, probs = [], [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
        probs.append(net(x).float().softmax(-1))
    return Predictions(torch.cat(images), torch.cat(labels), torch.cat(probs))


def confusion_matrix(p: Predictions) -> torch.Tensor:
    """Counts, rows = true class, columns = predicted class."""
    metric = MulticlassConfusionMatrix(p.probs.shape[1])
    return metric(p.probs.argmax(1), p.labels)


def confusion_matrix_figure(p: Predictions) -> Figure:
    fig, ax = MulticlassConfusionMatrix(p.probs.shape[1]).plot(confusion_matrix(p))
    ax.set_title(f"Test set confusion matrix (accuracy {accuracy(p):.4f})")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.set_size_inches(8, 8)
    return fig


def accuracy(p: Predictions) -> float:
    return (p.probs.argmax(1) == p.labels).float().mean().item()


def per_class_accuracy(p: Predictions) -> dict[str, list]:
    """A table: class, test images of it, correctly classified, accuracy."""
    cm = confusion_matrix(p)
    support = cm.sum(1)
    correct = cm.diag()
    return {
        "class": list(range(len(cm))),
        "support": support.tolist(),
        "correct": correct.tolist(),
        "accuracy": (correct / support.clamp(min=1)).tolist(),
    }


def worst_mistakes_figure(p: Predictions, count: int = 36) -> Figure | None:
    """The misclassified test digits the model was surest about, labelled true -> predicted."""
    conf, pred = p.probs.max(1)
    wrong = (pred != p.labels).nonzero().flatten()
    if len(wrong) == 0:
        return None
    worst = wrong[conf[wrong].argsort(descending=True)][:count]
    ncol = 6
    grid = make_grid(p.images[worst].unsqueeze(1), nrow=ncol, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(8, 8 * grid.shape[1] / grid.shape[2] + 0.6))
    ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1)
    for k, i in enumerate(worst.tolist()):
        row, col = divmod(k, ncol)
        ax.text(
            2 + col * 30,
            2 + row * 30,
            f"{p.labels[i].item()}→{pred[i].item()} {conf[i].item():.2f}",
            color="yellow",
            fontsize=8,
            va="top",
        )
    ax.set_title("Most confident mistakes on the test set (true→predicted, probability)")
    ax.axis("off")
    fig.tight_layout()
    return fig
