"""Text faithfulness of SP against gradient baselines on the embedded all-MiniLM-L6-v2 (zero-shot sentiment).

    uv run python benchmarks/text_metrics.py

Each review is explained for its zero-shot label among two label descriptions (the target is the cosine
similarity to the predicted description); removed tokens become [MASK]. Also the Sequence Pointing Game: a
positive and a negative review joined, the positive description explained, share of positive relevance inside the
positive review. The sentences were written for this benchmark; nothing was tuned on them.
"""

from __future__ import annotations

import time
import warnings

import torch

from semantic_pullbacks.text import TextExplainer, load_text_model
from semantic_pullbacks.text.metrics import score_texts, sequence_pointing_game

LABELS = ["This review is positive.", "This review is negative."]
POSITIVE = [
    "The food was delicious and the staff were friendly.",
    "A beautiful film with a moving story.",
    "I loved this book from start to finish.",
    "Great phone, the battery lasts for days.",
    "The hotel room was clean and comfortable.",
    "Excellent service, I will come back soon.",
    "The concert was fantastic and the crowd was happy.",
    "This is the best coffee I have had in years.",
]
NEGATIVE = [
    "The food was cold and the waiter was rude.",
    "A boring film with a predictable plot.",
    "I hated this book and could not finish it.",
    "Terrible phone, it broke after a week.",
    "The hotel room was dirty and noisy.",
    "Awful service, I will never return.",
    "The concert was a disappointment and far too loud.",
    "This coffee tastes burnt and bitter.",
]
METHODS = ("SoftPullback", "Gradient", "IntegratedGradients", "IntegratedPullbacks")


def pointing_game(tm, method: str) -> float:
    explainer = TextExplainer(tm, method=method)
    shares = []
    for pos, neg in zip(POSITIVE, NEGATIVE):
        for first, second, target in ((pos, neg, LABELS[0]), (neg, pos, LABELS[0])):
            r = explainer.attribute(first + " " + second, labels=LABELS, target=target)
            boundary = len(first)
            segment = torch.tensor([(a >= boundary) == (first == neg) for a, _ in r.offsets])
            share = sequence_pointing_game(torch.tensor([r.relevance]), segment[None], torch.tensor([r.special]))
            shares.append(float(share[0]))
    return sum(shares) / len(shares)


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    tm = load_text_model()
    start = time.time()
    table = score_texts(tm, POSITIVE + NEGATIVE, METHODS, labels=LABELS, steps=10)
    columns = ["comprehensiveness (higher)", "sufficiency (lower)", "deletion ABC (higher)", "pointing game (higher)"]
    print("| method | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|")
    for m in METHODS:
        row = table[m]
        spg = pointing_game(tm, m)
        cells = [
            f"{row['comprehensiveness']:.4f}",
            f"{row['sufficiency']:.4f}",
            f"{row['deletion ABC']:.4f}",
            f"{spg:.3f}",
        ]
        print(f"| {m} | " + " | ".join(cells) + " |")
    print(f"({len(POSITIVE + NEGATIVE)} reviews, {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
