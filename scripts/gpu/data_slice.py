#!/usr/bin/env python3
"""The GPU bundle's training data: what `otkd train` reads, small enough to travel, without the
teacher model (docs/CUDA.md, "The data slice"). Called by scripts/gpu-bundle.sh in two steps.

`slice DATA TEACHER LANG LINES OUT` writes
  OUT/multi30k/task1/train.{en,LANG}.gz             the first LINES lines of the training split
  OUT/multi30k/task1/{val,test_2016_flickr}.{en,LANG}.gz   the dev and test splits, whole
  OUT/teacher/                                      a stand-in teacher directory: the real
      tokenizer.json, and a config.json + model.safetensors of a BERT with the teacher's width
      (hidden_size 384) but no layers and a one-word vocabulary (a few KB). `otkd train` loads
      it, takes the width from it and never runs it, because every English caption it needs is
      a hit in the teacher cache; were one missing, encoding would fail on the one-word
      vocabulary (an error, never a silently wrong teacher).

`rekey REAL_CACHE STAND_IN_TEACHER OUT_CACHE DATA_SLICE` copies the cache entries that
`otkd train` wrote with the REAL teacher (host/src/teacher/cache.rs: one file per split,
`teacher-{split}.en-{key:016x}.safetensors`) to the names the stand-in teacher looks up. The key
hashes the teacher's three files, its pooling and the captions (FNV-1a 64, as host/src/rng.rs), so only the
names change; the contents (embeddings, token states, checksum) are the real teacher's.
"""

import gzip
import json
import shutil
import struct
import sys
from pathlib import Path

FORMAT_VERSION = "otkd-teacher-cache-v2"  # host/src/teacher/cache.rs
# The entries `otkd train` reads: (split, with token states).
ENTRIES = [("train", True), ("val", False), ("test_2016_flickr", False)]
MASK = (1 << 64) - 1


class Fnv64:
    """host/src/rng.rs Fnv64."""

    def __init__(self):
        self.h = 0xCBF29CE484222325

    def update(self, data: bytes):
        h = self.h
        for b in data:
            h = ((h ^ b) * 0x100000001B3) & MASK
        self.h = h

    def update_str(self, s: str):
        raw = s.encode()
        self.update(struct.pack("<Q", len(raw)))
        self.update(raw)


def read_lines(path: Path):
    """host/src/data/mod.rs split_lines: final newline, CR, BOM, whitespace-only lines."""
    raw = gzip.decompress(path.read_bytes())
    if not raw:
        return []
    body = raw[:-1] if raw.endswith(b"\n") else raw
    out = []
    for i, line in enumerate(body.split(b"\n")):
        if line.endswith(b"\r"):
            line = line[:-1]
        text = line.decode("utf-8")
        if i == 0 and text.startswith("\ufeff"):
            text = text[1:]
        out.append("" if not text.strip() else text)
    return out


def write_gz(path: Path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same slice gives the same bytes.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write("".join(line + "\n" for line in lines).encode())


def safetensors(tensors):
    """A safetensors file of f32 tensors: {name: (shape, values)}."""
    header, data = {}, b""
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def stand_in_teacher(real: Path, out: Path):
    config = json.loads((real / "config.json").read_text())
    h = config["hidden_size"]
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real / "tokenizer.json", out / "tokenizer.json")
    # The real teacher's pooling: otkd reads it (modules.json, the Pooling module's config.json)
    # and keys the cache with it.
    shutil.copyfile(real / "modules.json", out / "modules.json")
    for module in json.loads((real / "modules.json").read_text()):
        if module["type"] == "sentence_transformers.models.Pooling":
            (out / module["path"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real / module["path"] / "config.json", out / module["path"] / "config.json")
    stand_in = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": 1, "hidden_size": h,
        "num_hidden_layers": 0, "num_attention_heads": 1, "intermediate_size": 1,
        "max_position_embeddings": 1, "type_vocab_size": 1,
        "layer_norm_eps": config["layer_norm_eps"], "hidden_act": config["hidden_act"],
        "otkd_note": "stand-in for the GPU bundle: never run; the teacher cache holds "
                     f"{real.name}'s outputs (scripts/gpu/data_slice.py)",
    }
    (out / "config.json").write_text(json.dumps(stand_in, indent=1) + "\n")
    zeros = [0.0] * h
    (out / "model.safetensors").write_bytes(safetensors({
        "embeddings.word_embeddings.weight": ((1, h), zeros),
        "embeddings.position_embeddings.weight": ((1, h), zeros),
        "embeddings.token_type_embeddings.weight": ((1, h), zeros),
        "embeddings.LayerNorm.weight": ((h,), [1.0] * h),
        "embeddings.LayerNorm.bias": ((h,), zeros),
    }))


def cmd_slice(data, teacher, lang, lines, out):
    data, out, lines = Path(data), Path(out), int(lines)
    for split in ("train", "val", "test_2016_flickr"):
        for code in ("en", lang):
            captions = read_lines(data / "task1" / f"{split}.{code}.gz")
            if split == "train":
                captions = captions[:lines]
            write_gz(out / "multi30k" / "task1" / f"{split}.{code}.gz", captions)
    stand_in_teacher(Path(teacher), out / "teacher")
    print(f"data slice: train {lines} lines of en-{lang}, val and test whole; stand-in teacher in {out / 'teacher'}")


def pooling_name(teacher: Path) -> str:
    """host/src/teacher/model.rs Pooling::read, as its Debug name (Mean, Cls, Max)."""
    for module in json.loads((teacher / "modules.json").read_text()):
        if module["type"] == "sentence_transformers.models.Pooling":
            config = json.loads((teacher / module["path"] / "config.json").read_text())
            on = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            names = {"pooling_mode_mean_tokens": "Mean", "pooling_mode_cls_token": "Cls", "pooling_mode_max_tokens": "Max"}
            if len(on) == 1 and on[0] in names:
                return names[on[0]]
    sys.exit(f"{teacher}: no pooling otkd runs")


def model_key(teacher: Path) -> int:
    """host/src/teacher/cache.rs TeacherCache::new: the format, the three files, the pooling."""
    h = Fnv64()
    h.update_str(FORMAT_VERSION)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        h.update((teacher / name).read_bytes())
    h.update_str(pooling_name(teacher))
    return h.h


def entry_name(key: int, split: str, captions, keep_token_states: bool) -> str:
    h = Fnv64()
    h.update(struct.pack("<Q", key))
    h.update(bytes([int(keep_token_states)]))
    h.update(struct.pack("<Q", len(captions)))
    for s in captions:
        h.update_str(s)
    return f"teacher-{split}.en-{h.h:016x}.safetensors"


def cmd_rekey(real_cache, stand_in, out_cache, data):
    real_cache, out_cache = Path(real_cache), Path(out_cache)
    key = model_key(Path(stand_in))
    out_cache.mkdir(parents=True, exist_ok=True)
    for split, keep in ENTRIES:
        found = sorted(real_cache.glob(f"teacher-{split}.en-*.safetensors"))
        if len(found) != 1:
            sys.exit(f"rekey: expected one cache entry for {split}.en in {real_cache}, found {len(found)}")
        captions = read_lines(Path(data) / "task1" / f"{split}.en.gz")
        target = out_cache / entry_name(key, split, captions, keep)
        shutil.copyfile(found[0], target)
        print(f"{found[0].name} -> {target.name} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    commands = {"slice": (cmd_slice, 5), "rekey": (cmd_rekey, 4)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) - 2 != commands[sys.argv[1]][1]:
        sys.exit(__doc__)
    commands[sys.argv[1]][0](*sys.argv[2:])
