"""A byte-level BPE tokenizer for the built-in world, trained with `tokenizers`.

Byte-level BPE never meets an unknown character, so random-token and real-text calibration sources
tokenize like the training corpus. The result is a transformers PreTrainedTokenizerFast with BOS and
EOS, saved beside the model so lm-eval and every stage load the same tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS = "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on texts; deterministic for the same texts and vocab size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 of the tokenizer's canonical JSON: recorded in shard manifests."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    from calmix.models.folders import model_folder

    return AutoTokenizer.from_pretrained(str(model_folder(model_dir)))
