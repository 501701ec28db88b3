"""The README's first Python snippet runs as written from the repository root and answers the bundled sample right."""

import contextlib
import io
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_usage_snippet() -> str:
    """The first ```python block under the README's "Use it like LLaVA-OneVision" heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it like LLaVA-OneVision") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_usage_snippet_answers_the_bundled_sample_right_with_generate_and_pipeline(one_thread):
    expected = json.loads((ROOT / "examples" / "sample" / "questions.json").read_text())["samples"][0]["answer"]
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_usage_snippet(), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert [line.strip() for line in printed.getvalue().splitlines()] == [expected, expected]
