"""Run a Python module with torch and torchvision unimportable, as on a robot without them.

    python test/without_torch.py -m etc_ros.node --ros-args -p model_path:=M.onnx

A meta-path finder placed first refuses both packages (and their submodules) with the
ModuleNotFoundError an uninstalled package raises, so any import of them, however indirect,
fails exactly as it would on a machine where they were never installed.
"""
from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = ("torch", "torchvision")


class _Blocker(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


def block_torch() -> None:
    """From now on `import torch` (or torchvision) fails in this process."""
    if any(name.partition(".")[0] in BLOCKED for name in sys.modules):
        raise RuntimeError("torch was imported before it was blocked")
    sys.meta_path.insert(0, _Blocker())


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        sys.exit("usage: python test/without_torch.py -m MODULE [ARGS...]")
    block_torch()
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
