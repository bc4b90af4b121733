"""The language-id tokenizer: UTF-8 bytes, optionally merged by a small byte-level BPE.

Everything the gateway needs to turn a string into ids lives in the `tokenizers`
JSON it writes (tokenizer.json): NFKC, lowercasing and whitespace folding in the
normalizer, the byte-level pre-tokenizer (every word marked by a leading space
byte), the merges, and an end-of-text token appended by the post-processor. The
byte alphabet is always complete, so no input ever maps to an unknown token.
"""

from __future__ import annotations

from typing import Any

PAD = "[PAD]"
EOS = "[EOS]"
SPECIAL_TOKENS = (PAD, EOS)


def train_byte_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Bytes plus up to `vocab_size - 258` merges learned on the training texts only.

    `vocab_size` 258 (2 special tokens + 256 bytes) gives a pure byte model.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    # NFKC + lowercase, but no accent stripping: accents carry much of the language signal.
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    return tokenizer
