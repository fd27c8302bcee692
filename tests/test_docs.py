"""The README and docs/architecture.md name only files that exist.

Both are read as the current description of the project (docs/history.md is the record of what
was, and names files since removed). Checked: every path under a top-level folder of the
repository (``benchmarks/profile_kernels.py``, ``docs/measurements/*.txt``: globs must match
something), every path under a package folder of ``src/slimtvm`` (``lowering/weight_prefetch.py``),
and every relative Markdown link. The worked example of docs/architecture.md creates its own files
(``file=…`` blocks, checked by tests/test_architecture.py), so those are exempt.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "src", "slimtvm")
CURRENT_DOCS = ["README.md", os.path.join("docs", "architecture.md")]
TOP_LEVEL = ("src", "benchmarks", "scripts", "tests", "docs", "examples", ".ci")


def _pattern(folders) -> re.Pattern:
    names = "|".join(re.escape(folder) for folder in folders)
    # not preceded by a path character: "/tmp/tv/x.onnx" and "$OUT/a.json" are not repository paths
    return re.compile(rf"(?<![\w/.$-])((?:{names})/[\w./*-]*[\w*])")


def _package_folders() -> list:
    return sorted(name for name in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, name)) and not name.startswith("_"))


def missing_paths(text: str) -> list:
    """The repository paths, package paths and relative links of ``text`` that name nothing."""
    created = set(re.findall(r"file=(\S+)", text))
    missing = set()
    for path in _pattern(TOP_LEVEL).findall(text):
        if path not in created and not glob.glob(os.path.join(ROOT, path)):
            missing.add(path)
    for path in _pattern(_package_folders()).findall(text):
        if not path.endswith(".py"):
            continue  # a folder name in prose ("lowering/"), or a module path without its file
        if f"src/slimtvm/{path}" not in created and not os.path.exists(os.path.join(PACKAGE, path)):
            missing.add(path)
    for link in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not link.startswith(("http://", "https://", "mailto:")) and not os.path.exists(os.path.join(ROOT, link)):
            missing.add(link)
    return sorted(missing)


@pytest.mark.parametrize("doc", CURRENT_DOCS)
def test_current_docs_name_only_files_that_exist(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as handle:
        assert missing_paths(handle.read()) == []


def test_a_renamed_file_is_caught():
    """The check itself: a removed script, a module and a link that name nothing are reported; a
    file the worked example creates, and paths outside the repository, are not."""
    text = (
        "Run `benchmarks/no_such_benchmark.py`, see `lowering/no_such_pass.py` and [the map](docs/no_such_map.md);\n"
        "```python file=src/slimtvm/schedules/example_kernel.py\n```\n"
        "`src/slimtvm/schedules/example_kernel.py`, /tmp/tv/resnet18.onnx, $OUT/a.json, `benchmarks/scaling.py`."
    )
    assert missing_paths(text) == ["benchmarks/no_such_benchmark.py", "docs/no_such_map.md", "lowering/no_such_pass.py"]
