"""The front page and the docs stay in step with the code: every registered model and data set is named in the
README, in --help and in its docs page, and every flag --help lists has a row in docs/flags.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import imagesets
import models
from search.command.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_registered_model_and_data_set_is_named_in_the_readme_help_and_docs():
    help_text = re.sub(r"\s+", " ", build_parser().format_help())
    flags = readme_section("Flags") + (ROOT / "docs" / "flags.md").read_text()
    models_page, datasets_page = (ROOT / "docs" / "models.md").read_text(), (ROOT / "docs" / "datasets.md").read_text()
    for name in models.names():
        assert f"`{name}`" in flags and name in help_text and f"`{name}`" in models_page, name
    for name in imagesets.names():
        assert f"`{name}`" in flags and name in help_text and f"`{name}`" in datasets_page, name


def test_every_flag_of_help_has_a_row_in_the_flags_page():
    flags = (ROOT / "docs" / "flags.md").read_text()
    listed = set(re.findall(r"(--[a-z][a-z0-9-]*)", build_parser().format_help())) - {"--help"}
    assert listed and not [flag for flag in sorted(listed) if f"`{flag}" not in flags]


def test_the_readme_is_a_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move details to docs/"
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).is_file(), link


def test_ci_runs_the_readmes_first_two_blocks_whole_however_many_lines_they_span(tmp_path):
    """CI runs what README's first two ```bash blocks say; a second line in the first block must not push the
    test command out (it used to: CI took the first two lines)."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text("# x\n\n```bash\npip install -e .\npython -m search.run --smoke\n```\n\n"
                                        "```bash\npython -m pytest -q\n```\n\n```bash\npython -m search.run\n```\n")
    listed = subprocess.run(["bash", str(tmp_path / ".ci" / "run"), "--list"], capture_output=True, check=True)
    assert listed.stdout.decode().split("\0")[:-1] == ["pip install -e .\npython -m search.run --smoke\n",
                                                        "python -m pytest -q\n"]
    real = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--list"], capture_output=True, check=True)
    first, tests = real.stdout.decode().split("\0")[:2]
    assert "search.run" in first and "pytest" in tests
