"""Flow cache on a tiny generated generic-layout tree: which pairs, file format, skip, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training import flow_cache
from training.datasets import flow_path, load_flow


def make_tree(root: Path, frames: int = 5, h: int = 48, w: int = 64) -> Path:
    """One labelled sequence whose content moves +1 px in x per frame, one unlabelled one."""
    rng = np.random.default_rng(0)
    noise = rng.random((h // 4, (w + frames) // 4 + 1)).astype(np.float32)
    big = cv2.resize(noise, ((w + frames) // 4 * 4 + 4, h), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big * 255, 0, 255).astype(np.uint8)
    seq = root / "train" / "seq0"
    (seq / "images").mkdir(parents=True)
    (seq / "labels").mkdir()
    for i in range(frames):
        img = big[:, frames - i:frames - i + w]  # frame i+1 shows the scene moved right by 1
        cv2.imwrite(str(seq / "images" / f"{i:06d}.png"), np.repeat(img[:, :, None], 3, 2))
        cv2.imwrite(str(seq / "labels" / f"{i:06d}.png"), np.zeros((h, w), np.uint8))
    unl = root / "train" / "seq1" / "images"
    unl.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(unl / f"{i:06d}.png"), np.zeros((h, w, 3), np.uint8))
    return seq


def test_neighbour_pairs_by_hand() -> None:
    assert flow_cache.neighbour_pairs(3, [1], 1) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert flow_cache.neighbour_pairs(4, [0, 1, 2, 3], 1, label_stride=3) == [
        (0, 1), (1, 0), (2, 3), (3, 2)]


def test_cache_writes_both_directions_and_skips_existing(tmp_path: Path) -> None:
    seq = make_tree(tmp_path)
    argv = ["--data-root", str(tmp_path), "--split", "train", "--max-offset", "2",
            "--label-stride", "2", "--preset", "fast"]
    assert flow_cache.main(argv) == 0
    expected = {(0, 1), (1, 0), (0, 2), (2, 0), (2, 1), (1, 2), (2, 3), (3, 2), (2, 4), (4, 2),
                (4, 3), (3, 4)}
    files = sorted((seq / "flow").glob("*.npy"))
    assert {tuple(int(x) for x in f.stem.split("_")) for f in files} == expected
    assert not (tmp_path / "train" / "seq1" / "flow").exists()  # unlabelled: nothing to do

    raw = np.load(files[0], allow_pickle=False)
    assert raw.dtype == np.float16 and raw.shape == (48, 64, 2)
    fw = load_flow(seq, 0, 1)
    assert fw.dtype == np.float32
    assert np.allclose(np.median(fw[8:-8, 8:-8].reshape(-1, 2), axis=0), [1.0, 0.0], atol=0.3)
    bw = load_flow(seq, 2, 0)
    assert np.allclose(np.median(bw[8:-8, 8:-8].reshape(-1, 2), axis=0), [-2.0, 0.0], atol=0.3)

    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert flow_cache.build_cache(tmp_path, "train", max_offset=2, label_stride=2) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    files[0].unlink()
    assert flow_cache.build_cache(tmp_path, "train", max_offset=2, label_stride=2,
                                  preset="ultrafast") == 1


def test_load_flow_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="000003_000004.npy"):
        load_flow(tmp_path, 3, 4)
    bad = flow_path(tmp_path, 0, 1)
    bad.parent.mkdir()
    np.save(bad, np.zeros((4, 4), np.float16))
    with pytest.raises(ValueError, match="000000_000001.npy"):
        load_flow(tmp_path, 0, 1)


def test_cli_bad_root_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert flow_cache.main(["--data-root", str(tmp_path / "nope"), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flow_cache:") and "nope" in err and "\n" not in err


def _moving_frames(n: int, seed: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.random((h // 4, w // 4 + 4)).astype(np.float32), (w + 16, h),
                     interpolation=cv2.INTER_CUBIC)
    big = np.clip(big * 255, 0, 255).astype(np.uint8)
    return [np.repeat(big[:, 8 - i:8 - i + w, None], 3, 2) for i in range(n)]


def test_shared_tc_flows_computed_once_then_read(tmp_path: Path) -> None:
    frames = _moving_frames(4, seed=0)
    first = flow_cache.shared_tc_flows(frames, tmp_path / "tc", "seq0")
    (stored,) = (tmp_path / "tc").glob("48x64_seq0_*.npz")
    stamp = stored.stat().st_mtime_ns
    second = flow_cache.shared_tc_flows(frames, tmp_path / "tc", "seq0")
    assert stored.stat().st_mtime_ns == stamp  # read, not rewritten
    assert len(first) == len(second) == 3
    for (f1, v1), (f2, v2) in zip(first, second, strict=True):
        assert f2.dtype == np.float32 and v2.dtype == bool and f2.shape == (48, 64, 2)
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(v1, v2)
    assert np.median(first[0][0][..., 0][first[0][1]]) == pytest.approx(1.0, abs=0.3)


def test_shared_tc_flows_replaces_stale_and_keeps_other_sizes(tmp_path: Path) -> None:
    cache = tmp_path / "tc"
    flow_cache.shared_tc_flows(_moving_frames(3, seed=0), cache, "seq0")
    (old,) = cache.glob("48x64_seq0_*.npz")
    flow_cache.shared_tc_flows(_moving_frames(3, seed=0, h=32, w=48), cache, "seq0")
    flow_cache.shared_tc_flows(_moving_frames(3, seed=2), cache, "seq0_b")
    flow_cache.shared_tc_flows(_moving_frames(3, seed=3), cache, "nested/seq0")
    flow_cache.shared_tc_flows(_moving_frames(3, seed=1), cache, "seq0")  # regenerated data
    (new,) = [p for p in cache.glob("48x64_seq0_*.npz") if len(p.stem) == len(old.stem)]
    assert new != old and not old.exists()
    assert len(list(cache.glob("32x48_seq0_*.npz"))) == 1
    assert len(list(cache.glob("48x64_seq0_b_*.npz"))) == 1  # a name that extends "seq0" stays
    assert len(list(cache.glob("48x64_nested_seq0_*.npz"))) == 1


def test_shared_tc_flows_unwritable_cache_still_computes(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    flows = flow_cache.shared_tc_flows(_moving_frames(3, seed=0), blocker / "tc", "seq0")
    assert len(flows) == 2 and flows[0][0].shape == (48, 64, 2)
