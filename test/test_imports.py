"""Imports go one way: runtime <- tools, runtime <- training; tools and training never meet.

The runtime (``etc_ros/*.py``, ``etc_ros/models/``) is what a robot installs, so it must not
need the offline tools or the training code; tools and training share only what the runtime
offers. The four ``python -m etc_ros.{replay,evaluate,bench,demo}`` modules are fixed entry
points (docs/INTERFACES.md) that only forward to ``etc_ros/tools/``: they belong to the tools
layer, not the runtime. Every import is read from the source (module level and inside
functions, relative ones resolved, ``importlib.import_module("...")`` with a literal name), so
a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI_SHIMS = frozenset({"etc_ros.replay", "etc_ros.evaluate", "etc_ros.bench", "etc_ros.demo"})
# layer -> layers it must never import
FORBIDDEN = {"runtime": {"tools", "training"}, "tools": {"training"}, "training": {"tools"}}


def module_name(path: Path, root: Path = REPO) -> str:
    """Dotted name of a source file (``etc_ros/tools/demo.py`` -> ``etc_ros.tools.demo``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str | None:
    """runtime, tools or training for the project's own modules; None for everything else."""
    top = module.split(".")
    if module in CLI_SHIMS or top[:2] == ["etc_ros", "tools"]:
        return "tools"
    if top[0] == "etc_ros":
        return "runtime"
    if top[0] == "training":
        return "training"
    return None


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, wherever it sits."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from etc_ros import tools` imports a module too: check each name as one.
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(root: Path = REPO) -> list[str]:
    """Every import under root's etc_ros/ and training/ that points against the layers."""
    bad: dict[tuple[Path, int], str] = {}  # one message per import statement
    for path in sorted([*root.glob("etc_ros/**/*.py"), *root.glob("training/**/*.py")]):
        source_layer = layer(module_name(path, root))
        for line, target in imports(path, root):
            target_layer = layer(target)
            if target_layer in FORBIDDEN.get(source_layer, ()):
                bad.setdefault((path, line), f"{path.relative_to(root)}:{line}: {source_layer} "
                               f"imports {target} ({target_layer})")
    return [bad[k] for k in sorted(bad)]


def test_no_import_points_against_the_layers() -> None:
    assert violations() == []


def test_the_walk_sees_every_layer() -> None:
    """The rule is only as good as the walk: each layer really imports the runtime."""
    seen = {layer(module_name(p)) for p in [*REPO.glob("etc_ros/**/*.py"),
                                            *REPO.glob("training/**/*.py")]
            for _, t in imports(p) if layer(t) == "runtime"}
    assert seen == {"runtime", "tools", "training"}


@pytest.mark.parametrize(("where", "code", "arrow"), [
    ("etc_ros/node.py", "def f():\n    from etc_ros.tools import report\n", "runtime imports"),
    ("etc_ros/models/lraspp.py", "from ...training import losses\n", "runtime imports training"),
    ("etc_ros/segmenter.py", "import importlib\nimportlib.import_module('etc_ros.demo')\n",
     "runtime imports etc_ros.demo"),
    ("etc_ros/tools/report.py", "import training.train\n", "tools imports training"),
    ("etc_ros/evaluate.py", "from training import datasets\n", "tools imports training"),
    ("training/train.py", "from etc_ros import evaluate\n", "training imports etc_ros.evaluate"),
    ("training/synthetic/scene.py", "from ..export import x\nfrom etc_ros.tools.proc import y\n",
     "training imports etc_ros.tools.proc"),
])
def test_a_planted_wrong_import_is_caught(tmp_path: Path, where: str, code: str,
                                           arrow: str) -> None:
    """A copy of the tree with one wrong arrow added fails; the same copy without it passes."""
    for rel in ("etc_ros/node.py", "etc_ros/models/lraspp.py", "etc_ros/segmenter.py",
                "etc_ros/tools/report.py", "etc_ros/evaluate.py", "training/train.py",
                "training/synthetic/scene.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("import numpy\nfrom etc_ros import labels\n")
    assert violations(tmp_path) == []
    planted = tmp_path / where
    planted.write_text(planted.read_text() + code)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(where) and arrow in found[0], found
