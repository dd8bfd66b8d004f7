"""The documentation's examples run as written."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT

BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks("docs/api.md"))))
def test_api_page_examples_run(index, capsys):
    exec(compile(python_blocks("docs/api.md")[index], f"docs/api.md block {index}", "exec"), {})
    printed = capsys.readouterr().out
    assert printed or index == 3  # every example but the plugin's entry prints what it shows


@pytest.mark.slow
def test_readme_python_example_runs():
    blocks = python_blocks("README.md")
    assert blocks, "the README shows the API"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
