"""The three PyTorch models. Every variable-length input is zero-padded at the end with a mask.

Each model returns raw logits; softmax belongs to the gateway's postprocessing.
The masked pooling makes each answer independent of how much padding a batch
carries, which is what lets Triton and the gateway batch requests of different
lengths together.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the time axis of (B, T, D) values where mask (B, T) is 1."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    # clamp: an all-padding row (e.g. a warm-up request) gives zeros, not NaN.
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class DigitsCNN(nn.Module):
    """The classic small image stack: conv, pool, conv, adaptive pool, linear."""

    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 7 * 7, num_classes)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


class VowelsGRU(nn.Module):
    """A unidirectional GRU over (B, T, C) frames, masked mean pooling, linear head.

    Unidirectional on purpose: outputs at real frames never see the trailing
    padding, so padded and unpadded inputs give the same answer.
    """

    def __init__(self, channels: int, num_classes: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.gru(sequence)
        return self.head(masked_mean(outputs, mask))


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sine/cosine position encoding (Vaswani et al.), sliced to the input length."""

    def __init__(self, dim: int, max_length: int) -> None:
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_length, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
        self.table: torch.Tensor
        self.register_buffer("table", table.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[:, : x.shape[1]]


class LangIdTransformer(nn.Module):
    """Token embedding + positional encoding, a Transformer encoder with a padding mask, pooling."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_length: int,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        feedforward: int = 128,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position = SinusoidalPositionalEncoding(dim, max_length)
        layer = nn.TransformerEncoderLayer(
            dim, heads, feedforward, dropout=0.1, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            # Training batches come padded to the longest text of the whole set; cutting
            # them to the batch's own longest changes no answer (padding is masked) and
            # saves most of the compute. Export traces eval mode, so the graph keeps
            # fully dynamic shapes.
            longest = int(attention_mask.sum(dim=1).max())
            input_ids, attention_mask = input_ids[:, :longest], attention_mask[:, :longest]
        x = self.position(self.embedding(input_ids) * math.sqrt(self.dim))
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return self.head(self.norm(masked_mean(x, attention_mask)))
