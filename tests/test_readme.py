"""The README's code runs as written: its Python snippets, and the `tsanomaly` commands of its shell blocks.

Users copy from the README, so a renamed function, argument or option must break a test here.
Each code block is one test, run in a folder of its own that holds the files the README's
snippets read: those its ``setup`` block writes (run once, as a user would, in a fresh
interpreter), and a few more made from them here (CSV copies, one hour's rows, fitted models),
named after the README's commands.

- A Python block runs in a fresh interpreter (``python -c``), with the tsanomaly under test first
  on the path; the test fails when it exits non-zero (a snippet that raises).
- A shell block's ``tsanomaly ...`` commands run through ``tsanomaly.cli.main`` in this process
  (a fresh interpreter per command would cost seconds each); the test fails on a non-zero exit
  status. Its other commands (``pip``, ``python examples/...``, ``asv``, ``scripts/...``) are not
  run here: the examples and benchmark scripts have tests of their own (test_examples.py,
  test_benchmark_scripts.py), and installing is not a test's business.

A block that cannot run here (a GPU, a Spark session) is preceded in README.md by an HTML comment,
which the rendered page does not show::

    <!-- readme-test: skip (needs a GPU) -->

and is skipped with that reason, after the checks that need no run: its Python must parse, and its
``tsanomaly`` commands must parse with the CLI's own parser (sub-commands and options exist). The
block that writes the sample files is marked ``<!-- readme-test: setup (...) -->``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: An opening or closing fence, possibly indented (a block inside a list item).
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
#: The marker on the line before a block: ``<!-- readme-test: skip (reason) -->`` or ``setup (...)``.
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<kind>\w+)\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
MARKER_KINDS = ("skip", "setup")


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    line: int  # 1-based line number of the opening fence
    lang: str
    code: str
    marker: str | None  # "skip" or "setup" when a readme-test marker precedes the block
    reason: str | None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.lang or 'text'}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, each with the readme-test marker before it.

    Raises
    ------
    ValueError
        For a marker that is not followed by a block, a marker of an unknown kind, or a
        block left open: a typo must not silently run (or skip) the wrong block.
    """
    lines = text.splitlines()
    blocks = []
    pending = None  # (kind, reason, line) of a marker waiting for its block
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            if marker["kind"] not in MARKER_KINDS:
                raise ValueError(f"README.md:{i + 1}: unknown readme-test marker {marker['kind']!r}; use one of {MARKER_KINDS}")
            pending = (marker["kind"], marker["reason"], i + 1)
        elif fence:
            indent = len(fence["indent"])
            start = i
            i += 1
            while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
                i += 1
            if i == len(lines):
                raise ValueError(f"README.md:{start + 1}: code block never closed")
            # Strip the list item's indentation so that the code is what a user pastes.
            code = "\n".join(line[indent:] for line in lines[start + 1 : i])
            kind, reason = (pending[0], pending[1]) if pending else (None, None)
            blocks.append(Block(start + 1, fence["lang"], code, kind, reason))
            pending = None
        elif pending and lines[i].strip():
            raise ValueError(f"README.md:{pending[2]}: readme-test marker not directly followed by a code block")
        i += 1
    if pending:
        raise ValueError(f"README.md:{pending[2]}: readme-test marker not followed by a code block")
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block, each as its words: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [words for words in (shlex.split(line, comments=True) for line in joined.splitlines()) if words]


BLOCKS = readme_blocks(README.read_text())
SETUP = [block for block in BLOCKS if block.marker == "setup"]
RUNNABLE = [block for block in BLOCKS if block.lang in ("python", "bash") and block.marker != "setup"]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter in cwd, with the tsanomaly under test first on the path.

    That is the one this process imports (the shell blocks' commands run in it), so that both
    kinds of block test the same code, wherever the interpreter would find another.
    """
    import tsanomaly

    package_root = str(Path(tsanomaly.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def check_python(block: Block, cwd: Path) -> None:
    result = run_python(block.code, cwd)
    assert result.returncode == 0, (
        f"README.md:{block.line}: the Python block failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> Path:
    """A folder holding every file the README's runnable blocks read.

    The README's setup block writes failed_logins.parquet, history.parquet and today.parquet;
    the other files its commands name are made from them here.
    """
    assert len(SETUP) == 1, "README.md needs one block marked <!-- readme-test: setup (...) -->"
    folder = tmp_path_factory.mktemp("readme_samples")
    check_python(SETUP[0], folder)
    from tsanomaly import jobs

    history = pd.read_parquet(folder / "history.parquet")
    today = pd.read_parquet(folder / "today.parquet")
    history.to_csv(folder / "history.csv", index=False)
    today.to_csv(folder / "today.csv", index=False)
    # The hourly job's "hour.csv": the first hour after the history.
    today[today.ts == today.ts.min()].to_csv(folder / "hour.csv", index=False)
    # The models the report and GPU blocks name without fitting them.
    columns = dict(context=["country", "asn"], time="ts", value="failed_logins")
    jobs.fit_file(folder / "history.parquet", folder / "stl.tsa", detector="stl", device="cpu", **columns)
    jobs.fit_file(folder / "history.parquet", folder / "mp.tsa", detector="mp", device="cpu", **columns)
    shutil.copy(folder / "stl.tsa", folder / "model.tsa")
    return folder


def test_readme_has_runnable_python_and_shell_blocks():
    # The parser found the blocks: an unclosed fence or a changed fence style would leave none.
    python = [block for block in RUNNABLE if block.lang == "python" and block.marker is None]
    shell = [block for block in RUNNABLE if block.lang == "bash" and block.marker is None
             and any(words[0] == "tsanomaly" for words in shell_commands(block.code))]
    assert len(python) >= 1 and len(shell) >= 3, (python, shell)


def test_markers_are_parsed_and_checked():
    text = "<!-- readme-test: skip (needs a GPU) -->\n```bash\ntsanomaly demo\n```\n\n```python\nx = 1\n```\n"
    gpu, plain = readme_blocks(text)
    assert (gpu.marker, gpu.reason, gpu.code) == ("skip", "needs a GPU", "tsanomaly demo")
    assert (plain.marker, plain.code) == (None, "x = 1")
    with pytest.raises(ValueError, match="unknown readme-test marker"):
        readme_blocks("<!-- readme-test: skp (typo) -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="not directly followed"):
        readme_blocks("<!-- readme-test: skip (x) -->\nsome prose\n```bash\nls\n```\n")
    assert shell_commands("tsanomaly fit --a 1 \\\n    --b 2   # a comment\n# only a comment\n") == [
        ["tsanomaly", "fit", "--a", "1", "--b", "2"]
    ]


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_readme_block_runs(block, sample_files, tmp_path, monkeypatch, capsys):
    if block.marker == "skip":
        # What can be checked without running it still is: the Python parses, and the
        # tsanomaly commands' sub-commands and options exist.
        if block.lang == "python":
            compile(block.code, f"README.md:{block.line}", "exec")
        else:
            from tsanomaly.cli import _build_parser

            for words in shell_commands(block.code):
                if words[0] == "tsanomaly":
                    try:
                        _build_parser().parse_args(words[1:])
                    except SystemExit as exc:  # argparse: an unknown option or a missing argument
                        pytest.fail(f"README.md:{block.line}: `{shlex.join(words)}` does not parse (exit {exc.code})")
        pytest.skip(f"README.md:{block.line}: {block.reason}")
    for path in sample_files.iterdir():
        shutil.copy(path, tmp_path)
    if block.lang == "python":
        check_python(block, tmp_path)
        return
    from tsanomaly.cli import main

    # pip, python examples/..., asv, scripts/ are not run here: see the module docstring.
    commands = [words for words in shell_commands(block.code) if words[0] == "tsanomaly"]
    if not commands:
        pytest.skip(f"README.md:{block.line}: no tsanomaly command (installing, examples, benchmarks)")
    monkeypatch.chdir(tmp_path)
    for words in commands:
        try:
            status = main(words[1:])
        except SystemExit as exc:  # argparse: an unknown option or a missing argument
            status = exc.code
        assert status == 0, f"README.md:{block.line}: `{shlex.join(words)}` exited {status}:\n{capsys.readouterr().err}"
