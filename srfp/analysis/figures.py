"""The report's figures, drawn with matplotlib (no display needed) and returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def tsne_figure(panels: list[tuple[str, np.ndarray, list[str]]]) -> bytes:
    """Scatter plots of 2-d t-SNE embeddings, one panel per (title, points, group of each point)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for axis, (title, points, groups) in zip(axes[0], panels):
        names = sorted(set(groups))
        colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for number, name in enumerate(names):
            chosen = np.array([g == name for g in groups])
            axis.scatter(points[chosen, 0], points[chosen, 1], s=18, color=colours(number % colours.N), label=name)
        axis.set_title(title)
        axis.set_xlabel("t-SNE 1")
        axis.set_ylabel("t-SNE 2")
        axis.legend(fontsize=8, loc="best", title="scale, loss" if "custom" in title else "model")
    return _png(figure)


def seed_triplet_figure(table: pd.DataFrame) -> bytes:
    """Seed-triplet accuracy by (scale, loss), with the overall figure as a line."""
    groups = table.groupby(["scale", "loss"])["correct"].mean()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.bar([f"x{scale}, {loss}" for scale, loss in groups.index], groups.to_numpy(), color="tab:blue")
    axis.tick_params(axis="x", labelrotation=30)
    axis.axhline(table["correct"].mean(), color="black", linestyle="--", label="all seed triplets")
    axis.axhline(1 / 3, color="grey", linestyle=":", label="chance (1 of 3)")
    axis.set_ylim(0, 1)
    axis.set_xlabel("scale, loss")
    axis.set_ylabel("accuracy among seed-mates")
    axis.legend()
    return _png(figure)


def published_parser_figure(matrices: dict[str, pd.DataFrame], truths: dict[str, dict[str, str]]) -> bytes:
    """For each target, counts of each predicted value per published model; true values outlined."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(2 + 5.5 * len(matrices), 2 + 0.45 * max(
        len(m) for m in matrices.values())), squeeze=False)
    for axis, (target, matrix) in zip(axes[0], matrices.items()):
        axis.imshow(matrix.to_numpy(), cmap="Blues", aspect="auto")
        axis.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
        axis.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=8)
        for row, model in enumerate(matrix.index):
            for column, value in enumerate(matrix.columns):
                axis.text(column, row, int(matrix.iloc[row, column]), ha="center", va="center", fontsize=8)
                if truths[target].get(model) == value:
                    axis.add_patch(plt.Rectangle((column - .5, row - .5), 1, 1, fill=False, edgecolor="red", lw=2))
        axis.set_title(f"predicted {target}")
        axis.set_xlabel(target)
    axes[0][0].set_ylabel("published model")
    figure.suptitle("Parser predictions per published model (counts; red outline: the true value, where known)")
    return _png(figure)
