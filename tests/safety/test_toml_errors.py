"""Lab TOML files: every bad value, key, encoding or data file is a ConfigError with the file and its line
(issue 17, item 7)."""

from __future__ import annotations

import gzip

import pytest

from graddoctor.errors import ConfigError
from graddoctor.lab.toml_study import load_toml

GOOD = '[study]\nname = "ok"\n[net]\ndepth = [2, 3]\nwidth = 4\n[train]\nsteps = 2\nlr = 0.1\n'

CASES = {  # id: (file text, the line the message must name, or None when the file has no line to name)
    "table-as-number": ('[net]\ndepth = 3\n[quick]\nnet = 5\n', 4),
    "section-as-number": ('net = 5\n', 1),
    "huge-int": ('[net]\ndepth = 99999999999999999999\n', 2),
    "huge-width": ('[net]\nwidth = 1000000000000\n', 2),
    "empty-sweep": ('[net]\ndepth = []\n', 2),
    "empty-sweep-quick": ('[net]\ndepth = 3\n[quick.train]\nsteps = []\n', 4),
    "residual-no": ('[net]\nresidual = "no"\n', 2),
    "bool-as-int": ('[train]\nsteps = true\n', 2),
    "lr-inf": ('[train]\nlr = inf\n', 2),
    "lr-nan": ('[train]\nlr = nan\n', 2),
    "lr-zero": ('[train]\nlr = 0\n', 2),
    "lr-string": ('[train]\nlr = "fast"\n', 2),
    "unknown-quick-section": ('[net]\ndepth = 3\n[quick.foo]\nx = 1\n', 3),
    "unknown-key": ('[net]\ndepht = 3\n', 2),
    "unknown-section": ('[nett]\ndepth = 3\n', 1),
    "name-escapes": ('[study]\nname = "../../x"\n', 2),
    "name-absolute": ('[study]\nname = "/tmp/x"\n', 2),
    "name-not-string": ('[study]\nname = 5\n', 2),
    "nested-sweep": ('[net]\ndepth = [[1, 2]]\n', 2),
    "table-in-sweep": ('[net]\ndepth = [{a = 1}]\n', 2),
    "metrics-empty": ('[analysis]\nmetrics = []\n', 2),
    "metrics-unknown": ('[analysis]\nmetrics = ["speed"]\n', 2),
    "syntax": ('[net\ndepth = 3\n', None),
    "activation-unknown": ('[net]\nactivation = "swish2"\n', 2),
    "depth-negative": ('[net]\ndepth = -1\n', 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_study_files_name_their_line(case, tmp_path):
    text, line = CASES[case]
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message or f"line {line}," in message, message
    assert "line ?" not in message


def test_deep_arrays_non_utf8_and_a_good_file(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("[net]\ndepth = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_toml(deep)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[study]\ntitle = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="line 2: not UTF-8"):
        load_toml(latin)
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert load_toml(good).name == "ok"


def test_idx_short_header_and_bad_gz(tmp_path):
    from graddoctor.data import read_idx

    short = tmp_path / "short.idx"
    short.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ConfigError, match="short or damaged"):
        read_idx(str(short))
    bad = tmp_path / "bad.idx.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ConfigError, match="cannot read"):
        read_idx(str(bad))
    cut = tmp_path / "cut.idx.gz"
    cut.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-6])
    with pytest.raises(ConfigError):
        read_idx(str(cut))
