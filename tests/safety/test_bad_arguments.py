"""Bad arguments to every public function raise a GradDoctorError naming the argument; bad CLI input exits 2
with one paragraph and no traceback (issue 17, items 5 and 6). Counts: pytest -s -k counts."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.cli import main
from graddoctor.errors import GradDoctorError
from safety_damage import fingerprint, record_store


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return record_store(tmp_path_factory.mktemp("args") / "good.db")


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


API = {
    "load-name-list": lambda s: graddoctor.load(s, name=["a"]),
    "load-bytes": lambda s: graddoctor.load(b"runs.db"),
    "load-int": lambda s: graddoctor.load(123),
    "load-empty": lambda s: graddoctor.load(""),
    "diagnose-thresholds-str": lambda s: graddoctor.diagnose(s, thresholds="x"),
    "diagnose-name-int": lambda s: graddoctor.diagnose(s, name=3),
    "diagnose-notes-str": lambda s: graddoctor.diagnose(s, notes="x"),
    "check-optimizer-str": lambda s: graddoctor.check(_net(), torch.randn(8, 4), optimizer="adam"),
    "check-steps-0": lambda s: graddoctor.check(_net(), torch.randn(8, 4), steps=0),
    "check-steps-bool": lambda s: graddoctor.check(_net(), torch.randn(8, 4), steps=True),
    "check-steps-huge": lambda s: graddoctor.check(_net(), torch.randn(8, 4), steps=10**12),
    "check-loss-fn-int": lambda s: graddoctor.check(_net(), torch.randn(8, 4), loss_fn=3),
    "check-meta": lambda s: graddoctor.check(_net().to("meta"), torch.randn(8, 4)),
    "check-not-module": lambda s: graddoctor.check("model", torch.randn(8, 4)),
    "compare-remedies-int": lambda s: graddoctor.compare(_net, "digits", remedies=5),
    "compare-remedies-mixed": lambda s: graddoctor.compare(_net, "digits", remedies=["relu", 3]),
    "compare-lr-inf": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], lr=math.inf),
    "compare-lr-nan": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], lr=math.nan),
    "compare-lr-str": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], lr="0.1"),
    "compare-seeds-0": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], seeds=0),
    "compare-jobs-bool": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], jobs=True),
    "compare-store-int": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], store=5),
    "compare-optimizer-list": lambda s: graddoctor.compare(_net, "digits", remedies=["relu"], optimizer=["adam"]),
    "predict-batch-0": lambda s: graddoctor.predict(_net(), batch=0),
    "predict-batch-huge": lambda s: graddoctor.predict(_net(), batch=10**400),
    "predict-batch-float": lambda s: graddoctor.predict(_net(), batch=4.5),
    "predict-shape-str": lambda s: graddoctor.predict(_net(), input_shape="4"),
    "predict-shape-negative": lambda s: graddoctor.predict(_net(), input_shape=(-4,)),
    "predict-mlp-depth-huge": lambda s: graddoctor.theory.predict_mlp("tanh", 1.5, 0.0, 10**8),
    "predict-mlp-sigma-inf": lambda s: graddoctor.theory.predict_mlp("tanh", math.inf, 0.0, 5),
}


@pytest.mark.parametrize("case", list(API))
def test_api_refuses_bad_arguments_with_a_named_error(case, good, tmp_path):
    store = tmp_path / "s.db"
    shutil.copyfile(good, store)
    before = fingerprint(store)
    with pytest.raises(GradDoctorError) as info:
        API[case](store)
    assert len(str(info.value)) > 20
    assert fingerprint(store) == before


def test_inf_stays_inf_in_act_mean():
    model = nn.Sequential(nn.Linear(3, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with torch.no_grad():
        model[0].bias[0] = math.inf  # every sample's unit 0 is +Inf: the true mean is +Inf
    with graddoctor.watch(model, opt) as run:
        model(torch.randn(5, 3)).sum().backward()
        opt.step()
    assert graddoctor.load(run).stat("act_mean", "0")[0] == math.inf


MODEL = '''
import sys
from torch import nn
def exits(): sys.exit(3)
def exits_on_import_too(): raise SystemExit("bye")
def ok(): return nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))
'''


def _cli_cases(tmp, store):
    model = tmp / "m.py"
    model.write_text(MODEL)
    np.savez(tmp / "strings.npz", x=np.array(["a", "b"]), y=np.array([0, 1]))
    np.savez(tmp / "objects.npz", x=np.zeros((4, 8)).astype(complex), y=np.array([0, 1, 0, 1]))
    m = f"{model}:ok"
    return {
        "factory-sys-exit": ["check", f"{model}:exits", "--input-shape", "4,8"],
        "factory-systemexit-str": ["check", f"{model}:exits_on_import_too", "--input-shape", "4,8"],
        "shape-huge": ["check", m, "--input-shape", "999999999999,8"],
        "shape-400-digits": ["check", m, "--input-shape", "9" * 400 + ",8"],
        "shape-too-many-elements": ["check", m, "--input-shape", "100000,100000,100"],
        "shape-zero": ["check", m, "--input-shape", "0,8"],
        "shape-letters": ["check", m, "--input-shape", "a,b"],
        "data-strings": ["check", m, "--data", str(tmp / "strings.npz")],
        "data-complex": ["check", m, "--data", str(tmp / "objects.npz")],
        "check-steps-huge": ["check", m, "--input-shape", "4,8", "--steps", "100000000"],
        "check-steps-0": ["check", m, "--input-shape", "4,8", "--steps", "0"],
        "predict-depth-huge": ["predict", "--activation", "tanh", "--sigma-w2", "1.5", "--depth", "100000000"],
        "predict-depth-0": ["predict", "--activation", "tanh", "--sigma-w2", "1.5", "--depth", "0"],
        "predict-sigma-inf": ["predict", "--activation", "tanh", "--sigma-w2", "inf", "--depth", "5"],
        "predict-shape-empty": ["predict", m, "--input-shape", ""],
        "compare-lr-inf": ["compare", m, "--dataset", "digits", "--remedies", "relu", "--lr", "inf"],
        "compare-lr-nan": ["compare", m, "--dataset", "digits", "--remedies", "relu", "--lr", "nan"],
        "show-step-missing": ["show", str(store), "--step", "99999"],
        "show-name-missing": ["show", str(store), "--name", "nope"],
        "runs-folder": ["runs", str(tmp)],
        "runs-missing": ["runs", str(tmp / "missing.db")],
        "runs-not-a-store": ["runs", str(model)],
    }


def test_cli_bad_input_exits_2_with_one_paragraph(good, tmp_path, capsys):
    store = tmp_path / "s.db"
    shutil.copyfile(good, store)
    cases = _cli_cases(tmp_path, store)
    for case, argv in cases.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        text = err.getvalue()
        assert rc == 2, (case, rc, text)
        assert "Traceback" not in text and text.startswith("graddoctor "), (case, text)
        assert "\n\n" not in text.strip(), (case, text)
    sys.modules.pop("graddoctor_user_m", None)


def test_runs_escapes_control_characters_in_names(tmp_path, capsys):
    store = tmp_path / "esc.db"
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    evil = "ev\x1b[31mil\x1b]0;title\x07\u202e"
    with graddoctor.watch(model, opt, store=store, name=evil):
        model(torch.randn(3, 2)).sum().backward()
        opt.step()
    for argv in (["runs", str(store)], ["show", str(store)], ["diagnose", str(store)]):
        capsys.readouterr()
        main(argv)
        out = capsys.readouterr()
        assert "\x1b" not in out.out + out.err and "\x07" not in out.out and "\u202e" not in out.out, argv
    assert main(["runs", str(store)]) == 0
    assert "ev\\x1b[31mil" in capsys.readouterr().out


def test_counts(tmp_path, capsys):
    n_cli = len(_cli_cases(tmp_path, tmp_path / "s.db"))
    with capsys.disabled():
        print(f"\nbad-argument cases: API {len(API)}, CLI {n_cli}")
    assert len(API) >= 25 and n_cli >= 20


WATCH = {
    "store-int": dict(store=123), "store-none": dict(store=None), "store-float": dict(store=4.5),
    "store-bytes": dict(store=b"x.db"), "store-list": dict(store=["x.db"]), "include-int": dict(include=5),
    "include-mixed": dict(include=["a", 3]), "config-str": dict(config="abc"), "user-config-str": dict(user_config="abc"), "scaler-str": dict(scaler="x"),
    "update-ratio-no": dict(update_ratio="no"), "update-ratio-int": dict(update_ratio=1), "every-0": dict(every=0),
    "every-float": dict(every=1.5), "every-huge": dict(every=10**30), "flush-inf": dict(flush_seconds=math.inf),
    "flush-0": dict(flush_seconds=0), "resume-str": dict(resume="yes", name="a"), "hist-every-bool": dict(hist_every=True),
    "name-int": dict(name=5),
}


@pytest.mark.parametrize("case", list(WATCH))
def test_watch_refuses_bad_arguments_before_creating_anything(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GradDoctorError):
        graddoctor.watch(model, opt, **WATCH[case])
    assert list(tmp_path.iterdir()) == []  # no file named 123, None, 4.5 ...
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_watch_refuses_a_meta_model_before_the_store_exists(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2)).to("meta")
    with pytest.raises(GradDoctorError, match="meta"):
        graddoctor.watch(model, store=tmp_path / "runs.db")
    assert not (tmp_path / "runs.db").exists()
