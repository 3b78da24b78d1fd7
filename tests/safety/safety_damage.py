"""Damaged copies of a good store, made by plain byte edits or by SQL on a copy, each with a readable id.

Every maker takes the good store's path and a destination folder, writes the damaged store there
(and its side files, when the damage is in the WAL) and returns the damaged store's path.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import struct
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import graddoctor

SIDE = ("-wal", "-shm", "-journal")


def record_store(path: Path) -> Path:
    """Two finished runs, with histograms and a logged loss, of a small MLP."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for name in ("first", "second"):
        with graddoctor.watch(model, opt, store=path, name=name, hist_every=2) as run:
            for _ in range(12):
                loss = model(torch.randn(16, 6)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log(loss=loss)
    return path


def fingerprint(path: Path) -> dict[str, str | None]:
    """sha256 of the store and of each side file (None: absent), to show a reader changed nothing."""
    out = {}
    for suffix in ("", *SIDE):
        p = Path(f"{path}{suffix}")
        out[suffix or "main"] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
    return out


def _copy(good: Path, folder: Path, tag: str) -> Path:
    dest = folder / f"{tag}.db"
    shutil.copyfile(good, dest)
    return dest


def truncate(offset: int) -> Callable[[Path, Path], Path]:
    def make(good: Path, folder: Path) -> Path:
        dest = folder / f"trunc{offset}.db"
        dest.write_bytes(good.read_bytes()[:offset])
        return dest
    return make


def corrupt_page(page: int, seed: int) -> Callable[[Path, Path], Path]:
    """Random bytes over most of one page (page 0 keeps its 100-byte file header: a header is checked apart)."""
    def make(good: Path, folder: Path) -> Path:
        data = bytearray(good.read_bytes())
        size = struct.unpack(">H", data[16:18])[0]
        start = page * size + (100 if page == 0 else 0)
        rng = random.Random(seed)
        for k in range(start, min(start + size // 2, len(data))):
            data[k] = rng.randrange(256)
        dest = folder / f"page{page}-{seed}.db"
        dest.write_bytes(bytes(data))
        return dest
    return make


def flip_header(offset: int, value: bytes) -> Callable[[Path, Path], Path]:
    def make(good: Path, folder: Path) -> Path:
        data = bytearray(good.read_bytes())
        data[offset:offset + len(value)] = value
        dest = folder / f"hdr{offset}.db"
        dest.write_bytes(bytes(data))
        return dest
    return make


def sql(tag: str, statements: str) -> Callable[[Path, Path], Path]:
    """Damage made through SQL on a copy (a bad row, a dropped table), checkpointed back into one file."""
    def make(good: Path, folder: Path) -> Path:
        dest = _copy(good, folder, tag)
        con = sqlite3.connect(dest)
        con.executescript(statements)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")
        con.close()
        return dest
    return make


def wal_garbage(tag: str, payload: Callable[[random.Random], bytes]) -> Callable[[Path, Path], Path]:
    def make(good: Path, folder: Path) -> Path:
        dest = _copy(good, folder, tag)
        Path(f"{dest}-wal").write_bytes(payload(random.Random(tag)))
        return dest
    return make


def _bad_checksum_header(rng: random.Random) -> bytes:
    head = struct.pack(">IIIIII", 0x377F0682, 3007000, 4096, 1, rng.getrandbits(32), rng.getrandbits(32))
    return head + b"\x00" * 8 + bytes(rng.randrange(256) for _ in range(4120))


BAD_ROWS = {
    "config-json": "UPDATE runs SET config_json='{not json';",
    "env-json": "UPDATE runs SET env_json='[1, 2';",
    "nonfinite-json": "UPDATE runs SET first_nonfinite_json='{';",
    "shapes-json": "UPDATE layers SET param_shapes='{bad';",
    "hist-counts": "UPDATE hists SET counts='not a list';",
    "hist-position": "UPDATE hists SET position=position+100;",
    "hist-nonfinite-null": "UPDATE hists SET counts='[1, 2, \"x\"]';",
    "name-not-utf8": "UPDATE runs SET name=CAST(X'FFFE41' AS TEXT) WHERE run_id=2;",
    "step-text": "UPDATE steps SET step='abc' WHERE step=3;",
    "value-text": "UPDATE segments SET vals='high';",
    "value-short": "UPDATE segments SET vals=substr(vals, 1, 3);",
    "mask-short": "UPDATE segments SET mask=X'00' WHERE mask IS NOT NULL;",
    "steps-bad": "UPDATE segments SET steps=X'0102';",
    "stat-id-missing": "UPDATE segments SET stat_id=stat_id+1000;",
    "width-bad": "UPDATE segments SET width=3;",
    "drop-segments": "DROP TABLE segments;",
    "drop-stats": "DROP TABLE stats;",
    "drop-runs": "DROP TABLE runs;",
    "drop-layers": "DROP TABLE layers;",
    "drop-hists": "DROP TABLE hists;",
    "drop-scalars": "DROP TABLE scalars;",
}


def makers(good_size: int, page_size: int = 4096) -> dict[str, Callable[[Path, Path], Path]]:
    """Every damage case by id: truncations, corrupted pages, bad header fields, bad rows, WAL garbage."""
    rng = random.Random(17)
    offsets = sorted({1, 16, 50, 99, 100, 101, 512, page_size - 1, page_size, page_size + 1, good_size - 1,
                      *(rng.randrange(101, good_size) for _ in range(24)),
                      *(k * page_size for k in range(2, good_size // page_size))})
    out: dict[str, Callable[[Path, Path], Path]] = {f"truncate-{n}": truncate(n) for n in offsets if n < good_size}
    pages = good_size // page_size
    out |= {f"page-{p}-seed{s}": corrupt_page(p, s) for p in range(pages) for s in (1, 2)}
    out |= {
        "header-page-size": flip_header(16, b"\x03\x00"),
        "header-page-count": flip_header(28, b"\x00\x00\xff\xff"),
        "header-magic": flip_header(0, b"SQLite format 4"),
        "header-read-version": flip_header(19, b"\x05"),
    }
    out |= {f"row-{tag}": sql(tag, statement) for tag, statement in BAD_ROWS.items()}
    out |= {
        "wal-random": wal_garbage("walrand", lambda r: bytes(r.randrange(256) for _ in range(8192))),
        "wal-short": wal_garbage("walshort", lambda r: b"\x37\x7f\x06"),
        "wal-zeros": wal_garbage("walzeros", lambda r: b"\x00" * 4096),
        "wal-bad-checksum": wal_garbage("walsum", _bad_checksum_header),
    }
    return out
