"""One process or a torchrun job: where this process sits, the student's training pass behind
DDP, endless batches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from etc_ros.models import TrainOutput
from training.config import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    """Join the torchrun job when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    return Dist(dist.get_rank(), world, dev)


class TrainForward(nn.Module):
    """Routes ``forward`` to ``forward_train`` so DDP's gradient hooks see the training pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> TrainOutput:
        return self.model.forward_train(x)


def forward_clip(forward: nn.Module, model: nn.Module, images: torch.Tensor, key: int,
                 grad_frames: str) -> list[TrainOutput]:
    """The student on every clip frame (N, T, 3, H, W) -> one TrainOutput per frame.

    ``grad_frames="labelled"`` runs the labelled frame ``key`` with gradients and its
    neighbours once more without (``model.forward_train``, outside DDP), so the temporal and
    distillation terms pull the labelled frame towards fixed neighbours and backward costs one
    frame, not T.
    """
    n, t = images.shape[:2]
    if grad_frames == "all" or t == 1:
        return split_frames(forward(images.flatten(0, 1)), n, t)
    keyed = forward(images[:, key])
    others = [i for i in range(t) if i != key]
    with torch.no_grad():
        frames = split_frames(model.forward_train(images[:, others].flatten(0, 1)), n, t - 1)
    frames.insert(key, keyed)
    return frames


def split_frames(out: TrainOutput, n: int, t: int) -> list[TrainOutput]:
    """(N*T, ...) outputs of a flattened clip batch -> one TrainOutput per clip frame."""

    def part(x: torch.Tensor | None, i: int) -> torch.Tensor | None:
        return None if x is None else x.unflatten(0, (n, t))[:, i]

    return [TrainOutput(*(part(x, i) for x in out)) for i in range(t)]


def wrap_for_training(model: nn.Module, dataset: Dataset, ddp: Dist, seed: int
                      ) -> tuple[nn.Module, nn.Module, DistributedSampler | None]:
    """(forward, model, sampler): the training pass, under torchrun behind DDP (with SyncBN on
    CUDA, which replaces the model's BN layers, hence the model returned) and a sampler that
    splits the data between ranks."""
    forward: nn.Module = TrainForward(model)
    if ddp.world == 1:
        return forward, model, None
    if ddp.device.type == "cuda":  # SyncBatchNorm has no CPU implementation
        forward = nn.SyncBatchNorm.convert_sync_batchnorm(forward)
        model = forward.model
    forward = DistributedDataParallel(
        forward, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)
    sampler = DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    return forward, model, sampler


def infinite(loader: DataLoader, sampler: DistributedSampler | None,
             epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches without end, a new shuffle each epoch (``epoch``: where a resumed run is)."""
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
