"""One training loop for every model: AdamW, one-cycle schedule, gradient clipping, fixed seeds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

OPTIMIZER = "AdamW"
SCHEDULE = "OneCycleLR"
# Fraction of the one-cycle schedule spent warming the learning rate up.
WARMUP_FRACTION = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (recorded in the model card)."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    # Batch texts of similar length together (the last input is the attention mask): with
    # lengths from 2 to 60 tokens, random batches are mostly padding.
    length_buckets: bool = False


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _batches(
    order: torch.Tensor, batch_size: int, lengths: torch.Tensor | None, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled batches; with lengths, sorted by length within pools of 32 batches."""
    if lengths is None:
        return list(order.split(batch_size))
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * 32):
        batches += list(pool[torch.argsort(lengths[pool], stable=True)].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def fit(
    model: nn.Module,
    inputs: Sequence[np.ndarray],
    labels: np.ndarray,
    config: TrainConfig,
    name: str,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train in place; returns the mean loss of each epoch.

    `on_epoch(epoch, loss)` runs after each epoch (counted from 1), for example to
    evaluate and log; the model is put back in training mode afterwards.
    """
    seed_everything(config.seed)
    tensors = [torch.from_numpy(x) for x in inputs]
    targets = torch.from_numpy(labels)
    steps_per_epoch = (len(targets) + config.batch_size - 1) // config.batch_size
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=WARMUP_FRACTION,
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)
    lengths = tensors[-1].sum(dim=1) if config.length_buckets else None
    history: list[float] = []
    model.train()
    for epoch in range(config.epochs):
        started = time.monotonic()
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for index in _batches(order, config.batch_size, lengths, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(*(t[index] for t in tensors)), targets[index])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            schedule.step()
            total += float(loss) * len(index)
        history.append(total / len(targets))
        log.info(
            "%s epoch %d/%d loss %.4f lr %.2e (%.1fs)",
            name,
            epoch + 1,
            config.epochs,
            history[-1],
            schedule.get_last_lr()[0],
            time.monotonic() - started,
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
            model.train()
    model.eval()
    return history


@torch.no_grad()
def predict_logits(
    model: nn.Module, inputs: Sequence[np.ndarray], batch_size: int = 256
) -> np.ndarray:
    model.eval()
    n = len(inputs[0])
    chunks = []
    for start in range(0, n, batch_size):
        chunk = [torch.from_numpy(x[start : start + batch_size]) for x in inputs]
        chunks.append(model(*chunk).numpy())
    return np.concatenate(chunks)
