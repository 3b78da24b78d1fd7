"""`pip install graddoctor` from a built wheel: into a fresh venv with the torch pin, then run it.

Slow (a CPU torch unpacked from the local wheel into a fresh venv: about 17 s of CPU, a minute
of wall time on a loaded machine). The source is copied first, so that a stale `build/` or `*.egg-info` of the
checkout can neither add nor hide a file in the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.full]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "graddoctor"

WATCH_3_STEPS = """
import sys, torch, graddoctor
assert graddoctor.__file__.startswith(sys.prefix), graddoctor.__file__
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with graddoctor.watch(model, opt, store=sys.argv[1], name="wheel") as run:
    for _ in range(3):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        run.log(loss=loss)
view = graddoctor.load(sys.argv[1], name="wheel")
print("steps", view.steps.tolist(), "layers", view.layers, "status", view.status)
print("heavy", sorted(m for m in ("matplotlib", "mlflow", "wandb", "ray", "lightning") if m in sys.modules))
import importlib.resources
study = importlib.resources.files("graddoctor.lab").joinpath("example.toml").read_text()
print("study", "[study]" in study)
"""


def package_data() -> set[str]:
    """Files under src/graddoctor that are not Python sources (what package-data must ship)."""
    return {
        str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "src" / "graddoctor", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: setuptools comes from the test's own environment, not from an index.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
        check=True, capture_output=True, text=True, cwd=src, env=clean_env(),
    )
    (built,) = out.glob("graddoctor-*.whl")
    return built


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH (it points at the checkout's src/ in worktrees)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_wheel_holds_every_module_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = package_data()
    assert {"graddoctor/py.typed", "graddoctor/lab/example.toml"} <= data  # the check below is not empty
    assert data <= names, f"package data missing from the wheel: {sorted(data - names)}"
    modules = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "graddoctor = graddoctor.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_pip_install_of_the_wheel_runs_the_cli_and_a_watch(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # No pip inside: this test's own pip installs into it (`pip --python`), which saves seeding one.
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python, cli = env_dir / "bin" / "python", env_dir / "bin" / "graddoctor"
    env = clean_env()
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    shown = subprocess.run([str(cli), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "usage: graddoctor" in shown.stdout and "diagnose" in shown.stdout

    watched = subprocess.run(
        [str(python), "-c", WATCH_3_STEPS, str(tmp_path / "runs.db")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert watched.returncode == 0, watched.stderr[-3000:]
    assert "steps [0, 1, 2] layers ['0', '1', '2'] status finished" in watched.stdout
    assert "heavy []" in watched.stdout
    assert "study True" in watched.stdout  # the lab's TOML study is readable from the installed package
