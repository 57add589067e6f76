"""End to end on CPU: synthetic data, flow cache, all four configs, DDP, resume, export, errors.

Tiny on purpose (64x128, two iterations, two short training sequences): this checks the recipe
runs and its files are right, not that it learns.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torchvision.models import resnet18, resnet101

from etc_ros.checkpoint import load_checkpoint, load_model
from etc_ros.models import build_model
from training import export, train
from training.config import ConfigError, TrainConfig, load_config, load_yaml
from training.distributed import TrainForward, forward_clip
from training.flow_cache import build_cache
from training.pretrained import convert_state_dict, save_backbone
from training.run_state import load_state, save_state
from training.synthetic import generate_dataset
from training.transforms import normalize

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
SIZE = [64, 128]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, {"train": 2, "val": 1}, frames=5, height=SIZE[0], width=SIZE[1])
    build_cache(root, "train", max_offset=2)
    return root


def _config(tmp: Path, name: str, data: Path, **changes: object) -> Path:
    """A shipped config shrunk for the test (its base chain resolved, so the shipped files are
    parsed too)."""
    raw = load_yaml(CONFIGS / f"{name}.yaml")
    raw.update(data_root=str(data), input_size=SIZE, crop_size=SIZE, batch_size=2, iters=2,
               val_every=2, val_sequences=1, workers=0, max_offset=2)
    raw.update(changes)
    path = tmp / f"{Path(name).name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _metrics(run: Path) -> list[tuple[int, str, float]]:
    with (run / "metrics.csv").open() as f:
        return [(int(r["step"]), r["name"], float(r["value"])) for r in csv.DictReader(f)]


def _run(config: Path, out: Path, *extra: str) -> int:
    return train.main(["--config", str(config), "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def teacher(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    assert _run(_config(tmp, "teacher", data), tmp / "run") == 0
    return tmp / "run" / "best.safetensors"


@pytest.mark.parametrize(
    ("name", "terms"),
    [
        ("student_baseline", {"ce"}),
        ("student_tl", {"ce", "temporal"}),
        ("student_etc", {"ce", "temporal", "kd", "pf", "structured", "mf"}),
    ],
)
def test_configs_train_and_log_their_losses(name: str, terms: set[str], data: Path,
                                            teacher: Path, tmp_path: Path) -> None:
    changes = ({"teacher_checkpoint": str(teacher), "allow_weak_teacher": True,
                "teacher_cache_dir": str(tmp_path / "teacher_cache")}
               if name == "student_etc" else {})
    run = tmp_path / "run"
    assert _run(_config(tmp_path, name, data, **changes), run) == 0
    rows = _metrics(run)
    logged = {n.removeprefix("train/") for _, n, _ in rows if n.startswith("train/")}
    assert logged == terms | {"total", "lr"}
    assert {n for _, n, _ in rows if n.startswith("val/")} >= {"val/miou", "val/tc"}
    model, meta = load_model(run / "best.safetensors")
    assert meta.architecture == load_yaml(CONFIGS / f"{name}.yaml")["arch"]
    assert meta.input_size == tuple(SIZE) and "miou" in meta.metrics
    assert meta.recipe["loss_weights"].keys() == terms
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


def test_etc_trains_through_the_labelled_frame_only(data: Path, teacher: Path,
                                                  tmp_path: Path) -> None:
    changes = {"teacher_checkpoint": str(teacher), "allow_weak_teacher": True,
               "teacher_cache_dir": str(tmp_path / "teacher_cache"), "grad_frames": "labelled"}
    run = tmp_path / "run"
    assert _run(_config(tmp_path, "student_etc", data, **changes), run) == 0
    logged = {n.removeprefix("train/") for _, n, _ in _metrics(run) if n.startswith("train/")}
    assert logged == {"ce", "temporal", "kd", "pf", "structured", "mf", "total", "lr"}
    _, meta = load_model(run / "best.safetensors")
    assert meta.recipe["grad_frames"] == "labelled"


def test_labelled_grad_frames_keep_frame_order_and_detach_the_neighbours() -> None:
    torch.manual_seed(0)
    model = build_model("lraspp_effnet_lite0", 19).eval()  # eval: BN the same for both calls
    images = torch.randn(2, 3, 3, 64, 128)
    every = forward_clip(TrainForward(model), model, images, 1, "all")
    labelled = forward_clip(TrainForward(model), model, images, 1, "labelled")
    assert [f.logits.requires_grad for f in labelled] == [False, True, False]
    assert all(f.logits.requires_grad for f in every)
    for a, b in zip(every, labelled, strict=True):
        torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.features, b.features, rtol=1e-4, atol=1e-4)


def test_teacher_checkpoint_is_the_configured_architecture(teacher: Path) -> None:
    _, meta = load_model(teacher)
    assert meta.architecture == load_yaml(CONFIGS / "teacher.yaml")["arch"]


def test_lite2_teacher_config_trains_from_its_imagenet_backbone(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _run(_config(tmp_path, "teacher_lite2", data), run) == 0
    _, meta = load_model(run / "best.safetensors")
    assert meta.architecture == "pspnet_effnet_lite2"
    assert meta.recipe["backbone_weights"].endswith("efficientnet_lite2.safetensors")


# ---------------------------------------------------------------- every other shipped config

SHIPPED_ELSEWHERE = {"student_baseline", "student_tl", "student_etc", "teacher", "teacher_lite2"}
OTHER_CONFIGS = sorted(name for name in (str(p.relative_to(CONFIGS).with_suffix(""))
                                          for p in CONFIGS.rglob("*.yaml")
                                          if not p.name.startswith("base_")
                                          and p.relative_to(CONFIGS).parts[0] != "adapt")
                       if name not in SHIPPED_ELSEWHERE)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cityscapes layout (30-frame snippets labelled on their 20th frame: two to train on, one
    to validate on) + flow."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    label_ids = np.full(SIZE, 7, np.uint8)  # road, with car (26) and sky (23) bands
    label_ids[: SIZE[0] // 3], label_ids[:, : SIZE[1] // 4] = 23, 26
    for split, city, snippets in (("train", "bremen", 2), ("val", "aachen", 1)):
        frames = root / "leftImg8bit_sequence" / split / city
        labels = root / "gtFine" / split / city
        frames.mkdir(parents=True)
        labels.mkdir(parents=True)
        for snippet in range(1, snippets + 1):
            base = rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)
            for f in range(30):
                cv2.imwrite(str(frames / f"{city}_{snippet:06d}_{f:06d}_leftImg8bit.png"),
                            np.roll(base, f, axis=1))
            cv2.imwrite(str(labels / f"{city}_{snippet:06d}_000019_gtFine_labelIds.png"),
                        label_ids)
    build_cache(root, "train", layout="cityscapes", max_offset=2)
    return root


@pytest.fixture(scope="module")
def resnet_backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torchvision-layout ResNet-18/101 state dicts (random: the GPU machines hold ImageNet's),
    through the same conversion as ``python -m training.pretrained --from-pth``."""
    out = tmp_path_factory.mktemp("backbones")
    files = {}
    for name, net in (("resnet18", resnet18), ("resnet101", resnet101)):
        files[name] = out / f"{name}.safetensors"
        save_backbone(convert_state_dict(net().state_dict(), name), files[name], name, "test")
    return files


def _tiny_run(name: str, tmp: Path, data: Path, cityscapes: Path, backbones: dict[str, Path],
              teacher: Path | None = None) -> Path:
    """Two iterations of ``configs/<name>.yaml`` on tiny data of its own layout; the run."""
    cfg = load_config(CONFIGS / f"{name}.yaml")
    changes: dict[str, object] = {}
    if cfg.dataset == "cityscapes":
        data = cityscapes
        changes["backbone_weights"] = str(backbones[Path(cfg.backbone_weights).stem])
    if cfg.teacher_checkpoint:
        changes.update(teacher_checkpoint=str(teacher), allow_weak_teacher=True,
                       teacher_cache_dir=str(tmp / "teacher_cache"))
    run = tmp / "run"
    assert _run(_config(tmp, name, data, **changes), run) == 0
    return run


@pytest.fixture(scope="module")
def cityscapes_teacher_run(data: Path, cityscapes: Path, resnet_backbones: dict[str, Path],
                           tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_run("gpu/cityscapes_teacher", tmp_path_factory.mktemp("cs_teacher"), data,
                     cityscapes, resnet_backbones)


@pytest.mark.parametrize("name", OTHER_CONFIGS)
def test_every_other_config_runs_tiny(name: str, data: Path, teacher: Path, cityscapes: Path,
                                      resnet_backbones: dict[str, Path],
                                      cityscapes_teacher_run: Path, tmp_path: Path) -> None:
    """Ablation and GPU configs, two iterations each on tiny data of their own layout; the
    Cityscapes students distil from the tiny run of the Cityscapes teacher config."""
    cfg = load_config(CONFIGS / f"{name}.yaml")
    if name == "gpu/cityscapes_teacher":
        run = cityscapes_teacher_run
    else:
        own_teacher = (cityscapes_teacher_run / "best.safetensors"
                       if cfg.dataset == "cityscapes" else teacher)
        run = _tiny_run(name, tmp_path, data, cityscapes, resnet_backbones, own_teacher)
    _, meta = load_model(run / "best.safetensors")
    assert meta.architecture == cfg.arch and meta.input_size == tuple(SIZE)
    assert meta.recipe["loss_weights"] == cfg.loss_weights
    logged = {n.removeprefix("train/") for _, n, _ in _metrics(run) if n.startswith("train/")}
    assert logged == set(cfg.loss_weights) | {"total", "lr"}


def test_ddp_two_processes_gloo(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "training.train", "--config", str(_config(tmp_path, "student_tl", data)),
           "--out", str(run), "--device", "cpu", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((run / "train_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 2
    totals = [s for s, n, _ in _metrics(run) if n == "train/total"]
    assert totals == [2]  # rank 0 alone writes
    load_model(run / "last.safetensors")


def test_resume_continues_the_run(data: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, "student_baseline", data)
    run = tmp_path / "run"
    assert _run(config, run) == 0
    assert _run(config, run) == 2  # refuses to overwrite silently
    assert _run(config, run, "--resume", "--max-iters", "3") == 0
    assert json.loads((run / "train_state.json").read_text())["step"] == 3
    # validated at 2 (first run) and 3 (resumed); a restart from 0 would validate at 2 again
    assert [s for s, n, _ in _metrics(run) if n == "val/miou"] == [2, 3]
    assert _run(_config(tmp_path, "student_baseline", data, lr=0.5), run, "--resume",
                "--max-iters", "4") == 2


def test_train_state_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(arch="lraspp_mobilenetv3", batch_size=2)
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model.forward_train(torch.randn(2, 3, 32, 64)).logits.mean().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    config = {"arch": cfg.arch, "batch_size": [cfg.batch_size]}
    save_state(tmp_path, 7, {"model": model}, opt, scaler, config, {"best_miou": 12.5})
    expected_rng = torch.get_rng_state()
    torch.manual_seed(123)
    fresh = build_model(cfg.arch, cfg.num_classes)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"config differs .* in \['batch_size'\]"):
        load_state(tmp_path, {"model": fresh}, fresh_opt, scaler, {**config, "batch_size": [3]})
    state = load_state(tmp_path, {"model": fresh}, fresh_opt, scaler, config)
    assert (state["step"], state["best_miou"]) == (7, 12.5)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    moms = [opt.state[p]["momentum_buffer"] for p in model.parameters() if p in opt.state]
    fresh_moms = [fresh_opt.state[p]["momentum_buffer"] for p in fresh.parameters()
                  if p in fresh_opt.state]
    assert len(moms) == len(fresh_moms) > 0
    assert all(torch.equal(a, b) for a, b in zip(moms, fresh_moms, strict=True))


def test_export_writes_weights_the_node_loads(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _run(_config(tmp_path, "student_baseline", data), run) == 0
    out = tmp_path / "weights" / "student.safetensors"
    assert export.main(["--run", str(run), "--out", str(out), "--name", "student_test"]) == 0
    model, meta = load_model(out)
    assert meta.recipe["name"] == "student_test" and meta.recipe["arch"] == meta.architecture
    assert "miou" in meta.metrics and "tc" in meta.metrics
    frame = data / "val" / "val_000" / "images" / "000000.png"
    rgb = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        logits = model(normalize([rgb], tuple(meta.mean), tuple(meta.std)))
    assert logits.shape == (1, 19, *SIZE) and torch.isfinite(logits).all()
    assert out.stat().st_size < (run / "best.safetensors").stat().st_size  # fp16
    assert export.main(["--run", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_init_checkpoint_fine_tunes_trained_weights(data: Path, teacher: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """init_checkpoint starts from trained weights (the adaptation oracle fine-tunes so); a
    checkpoint of another architecture is a one-line error."""
    first = tmp_path / "first"
    assert _run(_config(tmp_path, "student_baseline", data), first) == 0
    init = first / "best.safetensors"
    tuned = tmp_path / "tuned"
    config = _config(tmp_path, "student_baseline", data, backbone_weights=None,
                     init_checkpoint=str(init), lr=1e-12, iters=1, val_every=1)
    assert _run(config, tuned) == 0
    before, _ = load_checkpoint(init)
    after, _ = load_checkpoint(tuned / "last.safetensors")
    weights = [k for k in before if k.endswith(".weight")]
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-3) for k in weights)
    config = _config(tmp_path, "student_baseline", data, backbone_weights=None,
                     init_checkpoint=str(teacher))
    assert _run(config, tmp_path / "wrong") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: init_checkpoint") and "pspnet" in err


# ------------------------------------------------------------------------------ bad inputs


def _tiny_tree(root: Path) -> Path:
    seq = root / "train" / "s0"
    rng = np.random.default_rng(0)
    for t in range(2):
        (seq / "images").mkdir(parents=True, exist_ok=True)
        (seq / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seq / "images" / f"{t:06d}.png"),
                    rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8))
        cv2.imwrite(str(seq / "labels" / f"{t:06d}.png"), np.zeros(SIZE, np.uint8))
    return seq


def _break_label_file(seq: Path) -> str:
    (seq / "labels" / "000001.png").unlink()
    return "missing label file: .*s0/labels/000001.png"


def _break_class_id(seq: Path) -> str:
    cv2.imwrite(str(seq / "labels" / "000001.png"), np.full(SIZE, 77, np.uint8))
    return "class id 77 out of range 0..18 .*s0/labels/000001.png"


def _break_image(seq: Path) -> str:
    (seq / "images" / "000001.png").write_bytes(b"\x89PNG\r\n truncated")
    return "unreadable image: .*s0/images/000001.png"


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("breaker", [_break_label_file, _break_class_id, _break_image])
def test_bad_data_gives_one_clear_error(breaker, workers: int, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pattern = breaker(_tiny_tree(tmp_path / "data"))
    config = _config(tmp_path, "student_baseline", tmp_path / "data", val_split=None,
                     workers=workers)
    assert _run(config, tmp_path / "run") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1
    assert errors[0].startswith("error: ")
    assert re.search(pattern, errors[0]), errors[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learning_rate": 0.1}, "unknown config key(s) ['learning_rate']"),
        ({"loss_weights": {"ce": 1.0, "flicker": 1.0}}, "unknown loss_weights key(s) ['flicker']"),
        ({"batch_size": "eight"}, "config key 'batch_size' must be int"),
        ({"loss_weights": {"ce": 1.0, "kd": 1.0}}, "teacher_checkpoint is required"),
        ({"class_recolour_prob": 1.5}, "class_recolour_prob must be in 0..1"),
        ({"grad_frames": "key"}, "grad_frames must be one of ['all', 'labelled']"),
    ],
)
def test_bad_config_gives_one_clear_error(changes: dict, message: str, data: Path,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "student_baseline", data, **changes)
    assert _run(config, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_teacher_gate_refusal_has_its_own_exit_code(data: Path, teacher: Path, tmp_path: Path,
                                                    capsys) -> None:
    """`make train` distils anyway on exit 3 only; any other failure stops it."""
    config = _config(tmp_path, "student_etc", data, teacher_checkpoint=str(teacher),
                     teacher_gate_reference=str(teacher),  # the teacher is not 3 mIoU above itself
                     teacher_cache_dir=str(tmp_path / "cache"))
    assert _run(config, tmp_path / "run") == train.EXIT_TEACHER_GATE == 3
    assert "allow_weak_teacher" in capsys.readouterr().err.strip().splitlines()[-1]
    assert _run(config, tmp_path / "run", "--allow-weak-teacher") == 0


def test_diverged_loss_is_one_line_with_the_frozen_bn_hint(data: Path, tmp_path: Path,
                                                          capsys) -> None:
    config = _config(tmp_path, "student_baseline", data, lr=1e8, freeze_bn=True, iters=4,
                     val_every=4)
    assert _run(config, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: loss is (nan|inf) at step [1-3]; .*frozen BN needs a lower "
                        r"backbone LR.*", err), err


def test_set_survives_flags_that_were_not_given() -> None:
    """`--set iters=600` without --max-iters trains 600 iterations; a given flag still wins."""
    args = argparse.Namespace(set=["iters=600", "batch_size=8", "lr=0.02"], data_root=None,
                              max_iters=None, batch_size=None, allow_weak_teacher=None)
    assert train._overrides(args) == {"iters": 600, "batch_size": 8, "lr": 0.02}
    args.max_iters, args.data_root = 50, "d"
    assert train._overrides(args) == {"iters": 50, "batch_size": 8, "lr": 0.02, "data_root": "d"}
