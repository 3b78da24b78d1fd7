"""The README and docs/ stay true: every block marked runnable runs, and prints what the page shows.

Convention (docs/README.md, "Runnable blocks"): a fence ```python run or ```sh run is run; a
```text output block right after it is what it must print (a line "..." stands for any lines).
All the blocks run in ONE subprocess (one torch import), each page in its own temporary
directory and namespace, its blocks in order; `sh run` lines are `graddoctor ...` only, run
in that process as `python -m graddoctor`. The same file checks the README's length and that
docs/ pages are linked and every relative link resolves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_WORD_LIMIT = 1600
RUNNER_TIMEOUT_S = 300

FENCE = re.compile(r"^(```+)\s*([^`]*)$")
RUNNABLE = {"python run": "python", "sh run": "sh"}


@dataclass(frozen=True)
class Block:
    page: str        # path relative to the repository root
    line: int        # 1-based line of the opening fence
    info: str        # the fence's info string, e.g. "python run"
    code: str
    expected: str | None = None   # the ```text output block that follows, if any

    @property
    def kind(self) -> str | None:
        return RUNNABLE.get(self.info)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(text: str, page: str) -> list[Block]:
    """Every top-level fenced block of a Markdown text, in order (info string normalised)."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start, body = m.group(1), " ".join(m.group(2).split()), i + 1, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        blocks.append(Block(page, start, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def runnable_blocks(text: str, page: str) -> list[Block]:
    """The runnable blocks of a page, each with its printed output: the next fenced block, when
    that one is ```text output (prose may stand between them)."""
    blocks, out = fenced_blocks(text, page), []
    for k, b in enumerate(blocks):
        if b.kind is None:
            continue
        nxt = blocks[k + 1] if k + 1 < len(blocks) else None
        if nxt is not None and nxt.info == "text output":
            b = Block(b.page, b.line, b.info, b.code, nxt.code)
        out.append(b)
    return out


def all_runnable() -> list[Block]:
    return [b for p in PAGES for b in runnable_blocks(p.read_text(), p.relative_to(ROOT).as_posix())]


def output_matches(expected: str, actual: str) -> bool:
    """Line by line, trailing spaces ignored; a line '...' matches any number of lines."""
    def norm(s: str) -> list[str]:
        ls = [line.rstrip() for line in s.split("\n")]
        while ls and not ls[-1]:
            ls.pop()
        return ls

    exp, act = norm(expected), norm(actual)
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(exp):
                memo[i, j] = j == len(act)
            elif exp[i] == "...":
                memo[i, j] = any(match(i + 1, k) for k in range(j, len(act) + 1))
            else:
                memo[i, j] = j < len(act) and exp[i] == act[j] and match(i + 1, j + 1)
        return memo[i, j]

    return match(0, 0)


def shell_commands(block: Block) -> list[list[str]]:
    """The argument lists of a `sh run` block; anything but a `graddoctor` command is refused."""
    import shlex

    cmds = []
    for n, line in enumerate(block.code.splitlines()):
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] != "graddoctor":
            raise ValueError(f"{block.page}:{block.line + 1 + n}: a `sh run` block may hold only "
                             f"`graddoctor ...` lines, got {line.strip()!r}")
        cmds.append(argv[1:])
    return cmds


# The runner: one process, every page in its own temporary directory and namespace.
RUNNER = textwrap.dedent('''
    import contextlib, io, json, os, runpy, sys, tempfile, time, traceback
    jobs, root, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
    results = []
    base = tempfile.mkdtemp(prefix="docs_blocks_")
    for n, (page, blocks) in enumerate(jobs):
        cwd = os.path.join(base, str(n))
        os.makedirs(cwd)
        os.symlink(os.path.join(root, "examples"), os.path.join(cwd, "examples"))
        os.chdir(cwd)
        ns = {"__name__": "__main__"}
        for b in blocks:
            buf, t0, error = io.StringIO(), time.perf_counter(), None
            try:
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()) as err:
                    if b["kind"] == "python":
                        # padded so that a traceback names the page and the page's own line
                        exec(compile("\\n" * b["line"] + b["code"], b["page"], "exec"), ns)
                    else:
                        for argv in b["commands"]:
                            sys.argv = ["graddoctor", *argv]
                            try:
                                runpy.run_module("graddoctor", run_name="__main__", alter_sys=True)
                            except SystemExit as e:
                                if e.code not in (None, 0):
                                    raise RuntimeError(f"graddoctor {' '.join(argv)} exited {e.code}: "
                                                       + err.getvalue()[-2000:]) from None
            except BaseException:
                error = traceback.format_exc(limit=-8)
            results.append({"id": b["id"], "stdout": buf.getvalue(), "error": error,
                            "seconds": time.perf_counter() - t0})
    json.dump(results, open(out, "w"))
''')


def run_blocks(blocks: list[Block], tmp: Path) -> dict[str, dict]:
    """Run blocks (grouped by page, in order) in one subprocess; their results by block id."""
    by_page: dict[str, list[dict]] = {}
    for b in blocks:
        item = {"id": b.id, "page": b.page, "line": b.line, "kind": b.kind, "code": b.code}
        if b.kind == "sh":
            item["commands"] = shell_commands(b)
        by_page.setdefault(b.page, []).append(item)
    (tmp / "jobs.json").write_text(json.dumps(list(by_page.items())))
    (tmp / "runner.py").write_text(RUNNER)
    proc = subprocess.run(
        [sys.executable, str(tmp / "runner.py"), str(tmp / "jobs.json"), str(ROOT), str(tmp / "out.json")],
        capture_output=True, text=True, timeout=RUNNER_TIMEOUT_S,
        env={"OMP_NUM_THREADS": "1", **os.environ, "MPLBACKEND": "Agg"},   # one thread: fast on a shared machine
    )
    assert proc.returncode == 0, f"the block runner itself failed:\n{proc.stderr[-3000:]}"
    return {r["id"]: r for r in json.loads((tmp / "out.json").read_text())}


BLOCKS = all_runnable()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_blocks(BLOCKS, tmp_path_factory.mktemp("blocks"))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs_and_prints_what_the_page_shows(block, results):
    r = results[block.id]
    assert r["error"] is None, f"{block.id} failed:\n{r['error']}"
    if block.expected is not None:
        assert output_matches(block.expected, r["stdout"]), (
            f"{block.id} printed something else than the page shows.\n--- page ---\n{block.expected}"
            f"--- printed ---\n{r['stdout']}")


def test_there_are_runnable_blocks_in_the_readme_and_the_docs():
    pages = {b.page for b in BLOCKS}
    assert "README.md" in pages and any(p.startswith("docs/") for p in pages), pages
    readme = [b for b in BLOCKS if b.page == "README.md"]
    assert {b.kind for b in readme} == {"python", "sh"} and all(b.expected for b in readme), (
        "the README's quickstart and check one-liner are run, and show what they print")


def test_a_broken_block_fails(tmp_path):
    page = "```python run\nx = 1\n```\n\n```python run\nprint(x)\nraise ValueError('rotted')\n```\n\nIt prints:\n\n```text output\n1\n```\n"
    blocks = runnable_blocks(page, "fake.md")
    res = run_blocks(blocks, tmp_path)
    assert res["fake.md:1"]["error"] is None
    assert "rotted" in res["fake.md:5"]["error"] and 'File "fake.md", line 7' in res["fake.md:5"]["error"]
    assert res["fake.md:5"]["stdout"] == "1\n" and blocks[1].expected == "1\n"


def test_output_comparison():
    assert output_matches("a\n...\nd\n", "a\nb\nc\nd\n")
    assert output_matches("a  \n", "a\n\n")
    assert output_matches("a\n...\n", "a\n")
    assert not output_matches("a\nb\n", "a\nc\n")
    assert not output_matches("a\n", "a\nb\n")


def test_sh_run_blocks_hold_only_graddoctor_commands():
    assert shell_commands(Block("p.md", 1, "sh run", "graddoctor runs x.db  # list\n\n")) == [["runs", "x.db"]]
    with pytest.raises(ValueError, match="only"):
        shell_commands(Block("p.md", 1, "sh run", "rm -rf /tmp/x\n"))
    for b in BLOCKS:
        if b.kind == "sh":
            shell_commands(b)


def words(path: Path) -> int:
    return len(path.read_text().split())


def test_readme_is_a_short_front_door():
    n = words(ROOT / "README.md")
    assert n < README_WORD_LIMIT, f"README.md has {n} words; move detail into a docs/ page (limit {README_WORD_LIMIT})"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def outside_fences(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside a fenced block."""
    kept, inside = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            kept.append(line)
    return kept


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code (where links are links)."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for line in outside_fences(text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', duplicates numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in outside_fences(path.read_text()):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f"{slug}-{k}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_the_index():
    linked = set()
    for page in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        for target in links(page):
            file = target.partition("#")[0]
            if file and not re.match(r"^[a-z]+:", file):
                linked.add((page.parent / file).resolve())
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md"))
               if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs pages linked from neither README.md nor docs/README.md: {missing}"


REPO_PATH = re.compile(r"(?<![\w/.])((?:src/graddoctor|tests|benchmarks|examples|docs)/[\w/.-]*\w)")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_paths_named_in_the_docs_exist(page):
    """A file or folder of this repository named on a page (`tests/...`, `src/graddoctor/...`) exists."""
    missing = sorted({p for p in REPO_PATH.findall(page.read_text()) if not (ROOT / p).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


DOTTED = re.compile(r"\bgraddoctor(?:\.[A-Za-z_]\w*)+")


def resolves(name: str) -> bool:
    """`graddoctor.a.b.c` is a module, or an attribute reached from its longest module prefix.

    A module is found without being imported (`find_spec`), so the integrations' frameworks
    (lightning, transformers) are not loaded; an attribute's module is imported.
    """
    import importlib
    import importlib.util

    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:k]))
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        if k == len(parts):
            return True
        obj = importlib.import_module(".".join(parts[:k]))
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_graddoctor_names_on_the_page_exist(page):
    """Every dotted name `graddoctor.x.y` a page mentions is importable (a module or an attribute)."""
    missing = [n for n in sorted(set(DOTTED.findall(page.read_text()))) if not resolves(n)]
    assert not missing, f"{page.relative_to(ROOT)} names what graddoctor does not have: {missing}"


def test_name_and_path_checks_can_fail():
    assert resolves("graddoctor.theory.chi1") and resolves("graddoctor.theory")
    assert not resolves("graddoctor.no_such_name") and not resolves("graddoctor.theory.no_such_function")
    assert REPO_PATH.findall("see `tests/no/such_test.py` and src/graddoctor/x.py.") == [
        "tests/no/such_test.py", "src/graddoctor/x.py"]
