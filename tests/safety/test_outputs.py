"""Outputs never clobber inputs, and a failed write leaves the old output as it was (issue 17, item 1)."""

from __future__ import annotations

import os
import shutil

import pytest

from graddoctor._outputs import OutputError, check_output, write_atomic
from graddoctor.cli import main
from safety_damage import fingerprint, record_store


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return record_store(tmp_path_factory.mktemp("out") / "good.db")


@pytest.fixture
def store(good, tmp_path):
    path = tmp_path / "runs.db"
    shutil.copyfile(good, path)
    return path


def _aliases(store):
    folder = store.parent
    os.link(store, folder / "hard.db")
    os.symlink(store, folder / "soft.db")
    (folder / "sub").mkdir()
    return [store, folder / "hard.db", folder / "soft.db", folder / "sub" / ".." / "runs.db",
            folder / "runs.db-wal", folder / "runs.db-shm", folder / "runs.db-journal"]


@pytest.mark.parametrize("verb", ["export", "export-parquet", "report", "tensorboard"])
def test_every_writing_verb_refuses_the_store_and_its_aliases(store, verb, capsys):
    before = fingerprint(store)
    for target in _aliases(store):
        argv = {"export": ["export", str(store), "-o", str(target)],
                "export-parquet": ["export", str(store), "--format", "parquet", "-o", str(target)],
                "report": ["report", str(store), "-o", str(target)],
                "tensorboard": ["export", str(store), "--format", "tensorboard", "-o", str(target)]}[verb]
        assert main(argv) == 2, target
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, err
        assert fingerprint(store) == before
    assert main(["export", str(store), str(store)]) == 2  # the positional OUT too


def test_bad_output_places_exit_2_without_traceback(store, tmp_path, capsys):
    cases = {
        "missing folder": ["export", str(store), "-o", str(tmp_path / "nope" / "x.csv")],
        "onto a folder": ["export", str(store), "-o", str(tmp_path)],
        "/dev/full": ["export", str(store), "-o", "/dev/full"],
        "tensorboard onto a file": ["export", str(store), "--format", "tensorboard", "-o", str(store)],
        "report onto a folder": ["report", str(store), "-o", str(tmp_path)],
    }
    (tmp_path / "a.csv").write_text("keep")
    cases["tensorboard onto another file"] = ["export", str(store), "--format", "tensorboard", "-o", str(tmp_path / "a.csv")]
    if not os.path.exists("/dev/full"):
        del cases["/dev/full"]
    for what, argv in cases.items():
        assert main(argv) == 2, what
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("graddoctor "), (what, err)
    assert (tmp_path / "a.csv").read_text() == "keep"


def test_failed_write_leaves_the_old_output_and_no_temp_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old content")
    with pytest.raises(RuntimeError):
        with write_atomic(out) as f:
            f.write("half of the new")
            raise RuntimeError("the writer failed half-way")
    assert out.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_write_replaces_and_keeps_the_mode(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old")
    out.chmod(0o640)
    with write_atomic(out) as f:
        f.write("new")
    assert out.read_text() == "new" and (out.stat().st_mode & 0o777) == 0o640


def test_export_writes_csv_and_a_second_export_replaces_it(store, tmp_path):
    out = tmp_path / "x.csv"
    assert main(["export", str(store), "-o", str(out)]) == 0
    first = out.read_text()
    assert first.startswith("run,step,layer,stat,value")
    assert main(["export", str(store), "-o", str(out), "--name", "first"]) == 0
    assert out.read_text() != first


def test_check_output_refuses_any_input_file(tmp_path):
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    with pytest.raises(OutputError, match="is the input"):
        check_output(tmp_path / "." / "data.npz", inputs=[data])
    assert check_output(tmp_path / "other.csv", inputs=[data]) == tmp_path / "other.csv"


def test_lab_out_folder_may_not_be_the_study_file(tmp_path):
    from graddoctor.lab.runner import run_study

    study = tmp_path / "s.toml"
    study.write_text('[net]\ndepth = 2\nwidth = 4\n[train]\nsteps = 2\n')
    with pytest.raises(OutputError):
        run_study(str(study), out=study, seeds=1, jobs=1, report=False)
    assert study.read_text().startswith("[net]")
