"""What a training loop leaves in its run folder besides checkpoints: resume state and metrics.

Resume state is two files, never a pickle: ``train_state.safetensors`` holds the tensors (each
module's state dict under ``<name>.``, the optimizer's per-parameter tensors under
``optim.<index>.``, the torch RNG states under ``rng.``) and ``train_state.json`` the rest (step,
config, optimizer hyper-parameters and scalars, AMP scaler, the caller's extra values). The JSON
is replaced last and names the step the tensors were written at, so a crash between the two
writes is detected. Any number of modules share one optimizer, so a loop with several models
(e.g. adaptation) uses the same files.

The metrics log is a long-format CSV (step, name, value) plus TensorBoard scalars.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from training.config import ConfigError

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
_RESERVED = ("optim", "rng")


def _check_names(modules: Mapping[str, nn.Module]) -> None:
    bad = [n for n in modules if n in _RESERVED or "." in n or not n]
    if bad:
        raise ValueError(f"module names {bad} clash with the state file's keys")


def save_state(out: Path, step: int, modules: Mapping[str, nn.Module],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write everything a resume needs into ``out``; ``config`` is what ``load_state``
    compares against, ``extra`` (JSON values) comes back from it as it is."""
    _check_names(modules)
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
               for name, module in modules.items() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            elif value is not None:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tmp = out / (STATE_TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, out / STATE_TENSORS)
    meta = {"step": step, **(extra or {}), "config": dict(config),
            "param_groups": opt["param_groups"], "optim_scalars": scalars,
            "scaler": scaler.state_dict()}
    tmp = out / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / STATE_JSON)


def load_state(out: Path, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, config: Mapping[str, Any],
               may_change: Collection[str] = ()) -> dict[str, Any]:
    """Restore modules, optimizer, scaler and RNG from ``out``; returns the JSON (``step`` and
    the saved ``extra`` keys). ConfigError if the files are missing or torn, or ``config``
    differs from the saved one in a key outside ``may_change``."""
    _check_names(modules)
    tensor_path, json_path = out / STATE_TENSORS, out / STATE_JSON
    if not (tensor_path.is_file() and json_path.is_file()):
        raise ConfigError(f"--resume: no {STATE_TENSORS} + {STATE_JSON} in {out}")
    meta = json.loads(json_path.read_text())
    with safe_open(str(tensor_path), framework="pt") as f:
        if (f.metadata() or {}).get("step") != str(meta["step"]):
            raise ConfigError(f"--resume: {tensor_path} and {json_path} are from different steps")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    current = json.loads(json.dumps(dict(config)))  # tuples compare as the saved lists
    changed = sorted(k for k, v in current.items()
                     if k not in may_change and meta["config"].get(k) != v)
    if changed:
        raise ConfigError(f"--resume: config differs from the run in {out} in {changed}")
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                if k.startswith(prefix)})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return meta


class MetricsLog:
    """Long-format CSV (step, name, value) plus TensorBoard scalars; rank 0 only."""

    def __init__(self, out: Path) -> None:
        path = out / "metrics.csv"
        new = not path.exists()
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value"])
        self._tb = SummaryWriter(str(out / "tb"))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        """One row per value, flushed, so a crashed run keeps what it logged."""
        for name, value in values.items():
            self._csv.writerow([step, name, f"{value:.6g}"])
            self._tb.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()
