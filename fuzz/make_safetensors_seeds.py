"""Writes the seed corpus of fuzz_safetensors: small valid files in the layout that
train/checkpoint.h documents (every dtype, metadata, empty and scalar tensors, no tensors).
Run from the repository root: python3 fuzz/make_safetensors_seeds.py"""
import json
import struct
from pathlib import Path

OUT = Path("fuzz/corpus/fuzz_safetensors")


def write(name, tensors, metadata=None):
    """tensors: (name, dtype, shape, raw bytes) in data order."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for tname, dtype, shape, raw in tensors:
        header[tname] = {"dtype": dtype, "shape": shape,
                         "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the writer does
    (OUT / name).write_bytes(struct.pack("<Q", len(text)) + text + data)


OUT.mkdir(parents=True, exist_ok=True)
write("every_dtype.safetensors", [
    ("w", "F32", [2, 2], struct.pack("<4f", 1.0, -2.5, 0.0, 3.0)),
    ("ids", "I32", [3], struct.pack("<3i", 0, -1, 2147483647)),
    ("h", "BF16", [2], struct.pack("<2H", 0x3F80, 0x7F80)),
    ("scalar", "F64", [], struct.pack("<d", 42.5)),
], metadata={"format": "pt", "step": "12"})
write("empty_tensors.safetensors", [
    ("empty", "F32", [0], b""),
    ("empty2", "I32", [2, 0, 3], b""),
    ("one", "F32", [1], struct.pack("<f", 7.0)),
])
write("no_tensors.safetensors", [], metadata={"k": "v"})
