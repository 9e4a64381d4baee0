"""A training loop written as PML's README shows it runs unchanged on ``langdml.compat.pml``.

The loop below is one source text whose only PML-specific lines are its imports. It is executed
twice: as written (pytorch-metric-learning) and with ``pytorch_metric_learning`` replaced by
``langdml.compat.pml`` in those import lines -- the whole migration. Same seeds, float64: the
per-step losses, the trained weights and the final accuracies must agree.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")

IMPORTS = """
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
"""

LOOP = """
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
model = model.double()
data = torch.randn(64, 12, dtype=torch.float64)
labels = torch.arange(64) % 6
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

miner = miners.MultiSimilarityMiner()
loss_func = losses.TripletMarginLoss()
proxy_loss = losses.ProxyAnchorLoss(num_classes=6, embedding_size=8).double()
loss_optimizer = torch.optim.SGD(proxy_loss.parameters(), lr=0.01)
history = []
for epoch in range(3):
    for start in range(0, 64, 16):
        x, y = data[start:start + 16], labels[start:start + 16]
        optimizer.zero_grad()
        loss_optimizer.zero_grad()
        embeddings = model(x)
        hard_pairs = miner(embeddings, y)
        loss = loss_func(embeddings, y, hard_pairs) + 0.1 * proxy_loss(embeddings, y)
        loss.backward()
        optimizer.step()
        loss_optimizer.step()
        history.append(loss.item())

accuracy_calculator = AccuracyCalculator(
    include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count"
)
with torch.no_grad():
    test_embeddings = model(data)
accuracies = accuracy_calculator.get_accuracy(test_embeddings, labels)
weights = [p.detach().clone() for p in model.parameters()]
"""


def _run(imports: str) -> dict:
    scope: dict = {}
    exec(imports + LOOP, scope)  # noqa: S102 (the test's own source text)
    return scope


def test_readme_loop_runs_unchanged_after_the_import_line():
    theirs = _run(IMPORTS)
    ours = _run(IMPORTS.replace("pytorch_metric_learning", "langdml.compat.pml"))
    assert ours["losses"].__name__ == "langdml.compat.pml.losses"
    assert len(ours["history"]) == 12
    assert ours["history"] == pytest.approx(theirs["history"], rel=1e-9, abs=1e-12)
    for a, b in zip(ours["weights"], theirs["weights"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert ours["accuracies"] == pytest.approx(theirs["accuracies"], abs=1e-12)
    assert theirs["history"][-1] != theirs["history"][0]  # it trained
