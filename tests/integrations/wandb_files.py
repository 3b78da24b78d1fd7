"""Read back what W&B offline mode wrote: the records of `run-<id>.wandb` (no account, no network).

The file is LevelDB's log format (32 KiB blocks; each chunk a 7-byte header: CRC, length, type
FULL/FIRST/MIDDLE/LAST) after a 7-byte W&B header, holding `wandb_internal_pb2.Record`s. wandb 0.31
has no Python reader of its own any more (its Go core reads them), so the tests keep this one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def chunks(raw: bytes):
    pos, parts = HEADER, b""
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        data = raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield data
        elif kind == FIRST:
            parts = data
        elif kind == MIDDLE:
            parts += data
        elif kind == LAST:
            yield parts + data


def read_offline_run(wandb_dir: Path) -> dict[str, Any]:
    """{"history": [row dicts], "summary": {key: value}, "config": {...}} of the one offline run under `wandb_dir`."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    wandb.teardown()  # the service process outlives run.finish() and may still be writing the file's tail
    (path,) = Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")
    assert path.read_bytes()[:4] == b":W&B"
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "exit": None}
    for data in chunks(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "run":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "exit":
            out["exit"] = rec.exit.exit_code
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)
