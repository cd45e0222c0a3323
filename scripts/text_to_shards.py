#!/usr/bin/env python3
"""Converts a text file to llm.c token shards, one token per byte (vocabulary 256).

    python3 scripts/text_to_shards.py data/tinyshakespeare.txt data/shakespeare \
        --val-fraction 0.1 --shard-tokens 100000000

writes data/shakespeare_val_000000.bin (the last ⌊size · val_fraction⌋ bytes, the split the
trainer makes of the text itself) and data/shakespeare_train_000000.bin, _000001.bin, ... (the
rest, at most --shard-tokens tokens each). Each shard is an llm.c uint16 shard: a header of 256
little-endian int32 (magic 20240520, version 1, token count, zeros), then the tokens as
little-endian uint16. Train on them with

    remoe train --config ... --data.format=llmc \
        --data.path='data/shakespeare_train_*.bin' --data.val_path='data/shakespeare_val_*.bin'

Python 3 standard library only. Existing shards with the same prefix are an error (a stale
shard would join the glob) unless --force, which deletes them first.
"""

import argparse
import glob
import math
import os
import struct
import sys

MAGIC_U16 = 20240520
VERSION = 1
HEADER_INTS = 256
CHUNK = 1 << 20  # bytes converted per write: memory stays small whatever the file size


def fail(message):
    print(f"text_to_shards: {message}", file=sys.stderr)
    sys.exit(1)


class Progress:
    """One line on stderr, rewritten in place: bytes done of the total."""

    def __init__(self, total):
        self.total = max(total, 1)
        self.done = 0

    def add(self, n, name):
        self.done += n
        pct = 100.0 * self.done / self.total
        sys.stderr.write(f"\rwriting {name}: {self.done:,} of {self.total:,} bytes ({pct:5.1f}%)")
        sys.stderr.flush()

    def finish(self):
        sys.stderr.write("\n")


def write_shard(path, src, n_tokens, progress):
    """Writes the next n_tokens bytes of src as one uint16 shard."""
    header = struct.pack(f"<{HEADER_INTS}i", MAGIC_U16, VERSION, n_tokens, *([0] * (HEADER_INTS - 3)))
    with open(path, "wb") as out:
        out.write(header)
        left = n_tokens
        while left > 0:
            chunk = src.read(min(CHUNK, left))
            if not chunk:
                fail(f"{src.name} ended early (was it changed while being read?)")
            tokens = bytearray(2 * len(chunk))  # little-endian uint16: the byte, then a zero
            tokens[0::2] = chunk
            out.write(tokens)
            left -= len(chunk)
            progress.add(len(chunk), os.path.basename(path))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="text file, read as bytes")
    p.add_argument("prefix", help="output prefix: PREFIX_train_NNNNNN.bin and PREFIX_val_NNNNNN.bin")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="last fraction of the bytes kept for validation, in [0, 1) (default 0.1)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000,
                   help="tokens per shard at most (default 100000000; < 2^31)")
    p.add_argument("--force", action="store_true", help="delete existing shards with this prefix first")
    a = p.parse_args()

    if not os.path.isfile(a.input):
        fail(f"no such file '{a.input}'")
    if not (0.0 <= a.val_fraction < 1.0):
        fail(f"--val-fraction must be in [0, 1), got {a.val_fraction}")
    if not (1 <= a.shard_tokens < 2**31):
        fail(f"--shard-tokens must be in [1, 2^31) (the header holds an int32 count), got {a.shard_tokens}")
    size = os.path.getsize(a.input)
    if size == 0:
        fail(f"'{a.input}' is empty (0 bytes)")
    n_val = math.floor(size * a.val_fraction)
    if a.val_fraction > 0 and n_val == 0:
        fail(f"--val-fraction {a.val_fraction} of {size} bytes leaves an empty validation split")

    stale = sorted(glob.glob(glob.escape(a.prefix) + "_train_*.bin") + glob.glob(glob.escape(a.prefix) + "_val_*.bin"))
    if stale and not a.force:
        fail(f"{len(stale)} shard(s) with prefix '{a.prefix}' exist already ({stale[0]}, ...): "
             "they would join the glob; pass --force to delete them first")
    for path in stale:
        os.remove(path)
    out_dir = os.path.dirname(a.prefix)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)

    n_train = size - n_val
    progress = Progress(size)
    written = []
    with open(a.input, "rb") as src:
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(math.ceil(n / a.shard_tokens)):
                count = min(a.shard_tokens, n - i * a.shard_tokens)
                path = f"{a.prefix}_{split}_{i:06d}.bin"
                write_shard(path, src, count, progress)
                written.append(path)
    progress.finish()
    print(f"{len(written)} shards: {n_train:,} training and {n_val:,} validation tokens under '{a.prefix}_*'")


if __name__ == "__main__":
    main()
