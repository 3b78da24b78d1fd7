"""Fuzz: every reader and verb meets damaged stores with exit 2 or a GradDoctorError, never a traceback,
and leaves the damaged file and its side files byte-identical (issue 17, item 8).

The cases are generated from one good store (safety_damage.makers): truncations at many offsets,
corrupted pages, bad header fields, bad rows, dropped tables, garbage in the WAL. The per-category
counts are printed by `pytest -s tests/safety/test_fuzz_stores.py -k counts`.
"""

from __future__ import annotations

import collections
import contextlib
import io
import shutil

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.cli import main
from graddoctor.errors import GradDoctorError, StoreError
from safety_damage import fingerprint, makers, record_store

VERBS = {
    "runs": lambda p, out: ["runs", str(p)],
    "show": lambda p, out: ["show", str(p)],
    "export": lambda p, out: ["export", str(p)],
    "export-o": lambda p, out: ["export", str(p), "-o", str(out / "x.csv")],
    "diagnose": lambda p, out: ["diagnose", str(p), "--json"],
    "show-name": lambda p, out: ["show", str(p), "--name", "first"],
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = record_store(tmp_path_factory.mktemp("good") / "good.db")
    assert not any(path.with_name(path.name + s).exists() for s in ("-wal", "-shm"))
    return path


def _cases(good_size: int) -> list[str]:
    return list(makers(good_size))


def _category(case: str) -> str:
    return case.split("-")[0]


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)  # an exception here is the traceback a user would see: the test fails
    return rc, err.getvalue()


def test_fuzz_damaged_stores_every_verb(good, tmp_path, capsys):
    """Each damaged store x each verb: exit 0/1 only when the damage is not in what the verb reads, else 2
    with one 'damaged store' paragraph; the file and side files unchanged; load() and watch() likewise."""
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    cases = makers(good.stat().st_size)
    loaded_ok: list[str] = []
    for case, make in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        path = make(good, folder)
        before = fingerprint(path)
        for verb, argv in VERBS.items():
            rc, err = run_cli(argv(path, folder))
            assert rc in (0, 1, 2), (case, verb, rc)
            assert "Traceback" not in err, (case, verb, err)
            if rc == 2:
                assert err.count("\n") == 1 and "error:" in err, (case, verb, err)
            outcomes[(_category(case), "exit2" if rc == 2 else "read")] += 1
            assert fingerprint(path) == before, (case, verb)
        try:
            run = graddoctor.load(path)
            for stat in run.stats:  # v3 reads statistics lazily: damage shows when they are read
                run.stat_matrix(stat)
            for layer in run.layers:
                run.hist(layer, "act"), run.hist(layer, "grad")
            outcomes[(_category(case), "load-ok")] += 1
            if _category(case) == "row":
                loaded_ok.append(case)
        except GradDoctorError:
            outcomes[(_category(case), "load-refused")] += 1
        assert fingerprint(path) == before, (case, "load")
        _append(path, case, outcomes)
    with capsys.disabled():
        print("\nfuzz store outcomes (category, outcome): count:", dict(sorted(outcomes.items())))
    # the damage that SQLite or our checks can see is refused by every reader
    for category in ("truncate", "wal", "header"):
        assert outcomes[(category, "read")] == 0, (category, outcomes)
    assert outcomes[("row", "load-ok")] == 0, loaded_ok


def _append(path, case, outcomes) -> None:
    """watch() on a damaged store: refused (StoreError) before anything is written, or the damage is in an
    old run's rows only (bad JSON: quick_check cannot see it) and the store is appended to."""
    before = fingerprint(path)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        with graddoctor.watch(model, opt, store=path, name="appended") as run:
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
            run.log(loss=0.0)
    except StoreError:
        assert fingerprint(path) == before, (case, "watch refused but changed the file")
        outcomes[(_category(case), "watch-refused")] += 1
        return
    assert case.startswith("row-"), (case, "watch appended to a store that fails the structural check")
    outcomes[(_category(case), "watch-appended")] += 1


def test_fuzz_counts(good, capsys):
    """The number of generated cases per category (for docs/errors-and-safety.md)."""
    counts = collections.Counter(_category(c) for c in makers(good.stat().st_size))
    with capsys.disabled():
        print("\nfuzz store cases:", dict(counts), "total", sum(counts.values()),
              "x", len(VERBS), "verbs + load + watch")
    assert sum(counts.values()) >= 60


def test_copy_of_good_store_reads_cleanly(good, tmp_path):
    path = tmp_path / "copy.db"
    shutil.copyfile(good, path)
    before = fingerprint(path)
    for verb, argv in VERBS.items():
        assert run_cli(argv(path, tmp_path))[0] == 0, verb
    assert fingerprint(path) == before  # no -wal/-shm left by the readers
