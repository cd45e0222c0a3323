"""Text as bytes, split and windowed exactly as remoe's train/data.h does (text format, windows
not bounded by documents): the last ⌊size · val_fraction⌋ bytes are validation (or all of
data.val_path), training windows are drawn with remoe's Rng, validation windows are the fixed,
evenly spread ones."""
import math

import numpy as np
import torch

from .rng import Rng


class Corpus:
    def __init__(self, config):
        self.train = np.fromfile(config.data_path, dtype=np.uint8)
        if config.val_path:
            self.train_end = len(self.train)
            self.val = np.fromfile(config.val_path, dtype=np.uint8)
            self.val_begin = 0
        else:
            if not 0.0 <= config.val_fraction < 1.0:
                raise ValueError(f"data: '{config.data_path}': val_fraction must be in [0, 1), "
                                 f"got {config.val_fraction}")
            n_val = math.floor(len(self.train) * config.val_fraction)
            self.train_end = len(self.train) - n_val
            self.val = self.train
            self.val_begin = self.train_end
        self.name = config.data_path


def _starts(begin, end, seq_len, name, split):
    if end - begin < seq_len + 1:
        raise ValueError(f"data: '{name}' {split} split has {end - begin} tokens but seq_len "
                         f"{seq_len} needs windows of {seq_len + 1} tokens")
    return end - begin - seq_len  # window starts begin .. end − seq_len − 1


def _batch(tokens, starts, seq_len):
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len + 1)[None, :]
    windows = torch.from_numpy(tokens[idx].astype(np.int64))  # (B, S + 1)
    return windows[:, :-1].reshape(-1), windows[:, 1:].reshape(-1)


class WindowSampler:
    """remoe's WindowSampler: one Rng.below(total starts) per window, in batch order."""

    def __init__(self, corpus, seq_len, seed=0, state=None):
        self.tokens = corpus.train
        self.begin = 0
        self.seq_len = seq_len
        self.total = _starts(0, corpus.train_end, seq_len, corpus.name, "train")
        self.rng = Rng.from_state(state) if state is not None else Rng(seed)

    def next(self, batch_size):
        """(inputs, targets), each (batch_size · seq_len) int64 on the CPU."""
        starts = [self.begin + self.rng.below(self.total) for _ in range(batch_size)]
        return _batch(self.tokens, starts, self.seq_len)


def fixed_batch(corpus, seq_len, batch_size, batch_index, n_batches):
    """remoe's fixed_batch on the validation split: window j of n_batches · batch_size starts at
    start number ⌊j · span / total⌋."""
    span = _starts(corpus.val_begin, len(corpus.val), seq_len, corpus.name, "validation")
    total = n_batches * batch_size
    starts = [corpus.val_begin + (batch_index * batch_size + b) * span // total
              for b in range(batch_size)]
    return _batch(corpus.val, starts, seq_len)
