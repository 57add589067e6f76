"""Training configs: inheritance through ``base:``, ``--set`` parsing, the shipped files.

``data/train_configs_expected.json`` holds every shipped config as it loaded before the configs
were made to inherit (``dataclasses.asdict(load_config(path))``): the inheriting files must give
exactly the same runs.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from training import train
from training.config import (
    ConfigError,
    TrainConfig,
    coerce_config,
    load_config,
    load_yaml,
    parse_sets,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
EXPECTED = json.loads((Path(__file__).parent / "data" / "train_configs_expected.json").read_text())


def _shipped() -> list[str]:
    """Every training config; ``base_*.yaml`` files are only inherited from, ``adapt/`` holds
    training.adapt's."""
    return sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")
                  if not p.name.startswith("base_") and p.relative_to(CONFIGS).parts[0] != "adapt")


def test_the_shipped_configs_are_the_ones_recorded() -> None:
    assert _shipped() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_loads_as_before_inheritance(name: str) -> None:
    expected = coerce_config(TrainConfig, EXPECTED[name], name)
    assert load_config(CONFIGS / name) == expected


def test_every_shipped_config_inherits() -> None:
    """Variants state only their differences from a ``base_*.yaml``."""
    plain = [n for n in _shipped() if "base" not in yaml.safe_load((CONFIGS / n).read_text())]
    assert plain == []


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_keys_override_and_mappings_are_replaced_whole(tmp_path: Path) -> None:
    _write(tmp_path, "root.yaml", "arch: lraspp_effnet_lite0\nlr: 0.02\nseed: 4\n"
                                  "loss_weights: {ce: 1.0, temporal: 0.1}\n")
    _write(tmp_path, "mid.yaml", "base: root.yaml\nlr: 0.05\n")
    child = _write(tmp_path, "sub/child.yaml", "base: ../mid.yaml\nloss_weights: {ce: 2.0}\n")
    assert load_yaml(child) == {"arch": "lraspp_effnet_lite0", "lr": 0.05, "seed": 4,
                                "loss_weights": {"ce": 2.0}}
    cfg = load_config(child, seed=9)
    assert (cfg.lr, cfg.seed, cfg.loss_weights) == (0.05, 9, {"ce": 2.0})


def test_base_cycle_is_one_line(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "base: b.yaml\narch: lraspp_effnet_lite0\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base chain loops: .*a\.yaml -> .*b\.yaml -> .*a\.yaml")\
            as err:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(err.value)
    _write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_yaml(tmp_path / "self.yaml")


def test_missing_or_bad_base_is_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    child = _write(tmp_path, "child.yaml", "base: nowhere.yaml\narch: lraspp_effnet_lite0\n")
    with pytest.raises(ConfigError, match=r"cannot read base .*nowhere\.yaml of .*child\.yaml"):
        load_yaml(child)
    assert train.main(["--config", str(child), "--device", "cpu",
                       "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read base") and len(err.splitlines()) == 1
    _write(tmp_path, "list.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="'base' must be a file name"):
        load_yaml(tmp_path / "list.yaml")


def test_unknown_key_in_a_base_names_the_config(tmp_path: Path) -> None:
    _write(tmp_path, "root.yaml", "arch: lraspp_effnet_lite0\nlearning_rate: 0.1\n")
    child = _write(tmp_path, "child.yaml", "base: root.yaml\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rate'\] in "
                                          r".*child\.yaml"):
        load_config(child)


def test_set_overrides_config_keys_as_yaml() -> None:
    assert parse_sets(["seed=3", "teacher_scales=[1.0, 1.25]", "teacher_cache_dir=a/b",
                       "loss_weights={ce: 1.0}"]) \
        == {"seed": 3, "teacher_scales": [1.0, 1.25], "teacher_cache_dir": "a/b",
            "loss_weights": {"ce": 1.0}}
    assert parse_sets([]) == {}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_sets(["seed"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_sets(["=3"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_sets(["seed=[1"])


@dataclass(frozen=True)
class _Other:
    """Another loop's config: coerce_config is not tied to TrainConfig."""

    student: str
    steps: int = 10
    size: tuple[int, int] = (64, 128)
    scales: tuple[float, ...] = (1.0,)
    weights: dict[str, float] = field(default_factory=dict)
    note: str | None = None


def test_coerce_config_works_for_any_dataclass() -> None:
    cfg = coerce_config(_Other, {"student": "s", "size": [32, 64], "scales": [1, 2.5],
                                 "weights": {"a": 1}}, "other.yaml")
    assert cfg == _Other("s", 10, (32, 64), (1.0, 2.5), {"a": 1.0})
    assert isinstance(cfg.weights["a"], float)
    with pytest.raises(ConfigError, match=r"config other\.yaml must set 'student'"):
        coerce_config(_Other, {}, "other.yaml")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['stpes'\] in other\.yaml"):
        coerce_config(_Other, {"student": "s", "stpes": 3}, "other.yaml")
    with pytest.raises(ConfigError, match="config key 'steps' must be int, got True"):
        coerce_config(_Other, {"student": "s", "steps": True}, "other.yaml")
    with pytest.raises(ConfigError, match="config key 'size' must be a list of 2 values"):
        coerce_config(_Other, {"student": "s", "size": [1, 2, 3]}, "other.yaml")
