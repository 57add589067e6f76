"""ETC training losses: segmentation CE, temporal loss, and the temporal distillation terms.

Each term is a small function (or module) so it can be unit-tested by hand; ``ETCLoss`` combines
them with the weights from the YAML config. Teacher tensors are always detached here, so even a
teacher run outside ``no_grad`` never receives gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.labels import IGNORE_INDEX
from etc_ros.temporal import occlusion_mask, warp

if TYPE_CHECKING:
    from etc_ros.models import TrainOutput

LOSS_TERMS = ("ce", "temporal", "kd", "pf", "structured", "mf")
DEFAULT_WEIGHTS: Mapping[str, float] = {"ce": 1.0, "temporal": 0.0, "kd": 0.0, "pf": 0.0,
                                        "structured": 0.0, "mf": 0.0}


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      aux_logits: torch.Tensor | None = None, aux_weight: float = 0.4,
                      ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy on the labelled frame plus ``aux_weight`` x the auxiliary head (PSPNet)."""
    target = target.long()
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index)
    if aux_logits is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(aux_logits, target, ignore_index=ignore_index)
    return loss


def temporal_loss(logits_t: torch.Tensor, logits_tk: torch.Tensor, flow_t_to_tk: torch.Tensor,
                  mask: torch.Tensor | None = None, img_t: torch.Tensor | None = None,
                  img_tk: torch.Tensor | None = None,
                  flow_tk_to_t: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's TL: ``MSE(M * Q_t, M * warp(Q_{t+k}))`` on the student's own logits.

    ``M`` is ``mask`` if given (N,1,H,W), else photometric x fw-bw (if ``flow_tk_to_t``) x
    in-frame, from the normalised images. Like the paper, the mean runs over all elements, so
    masked-out pixels count as zero error rather than being renormalised away.
    """
    if logits_t.shape != logits_tk.shape:
        raise ValueError(f"temporal_loss: logits shapes differ {tuple(logits_t.shape)} vs "
                         f"{tuple(logits_tk.shape)}")
    warped, inside = warp(logits_tk, flow_t_to_tk, mode="bilinear")
    if mask is None:
        if img_t is None or img_tk is None:
            raise ValueError("temporal_loss needs either a mask or both images")
        with torch.no_grad():
            mask = occlusion_mask(img_t.float(), img_tk.float(), flow_t_to_tk.float(),
                                  None if flow_tk_to_t is None else flow_tk_to_t.float())
    else:
        mask = mask.to(warped.dtype) * inside.to(warped.dtype)
    mask = mask.detach().to(warped.dtype)
    return F.mse_loss(mask * logits_t, mask * warped)


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel ``KL(softmax(t/T) || softmax(s/T)) * T^2``, averaged over (``mask``ed) pixels.

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    ``mask`` (N, 1, H, W) drops pixels where the teacher has no target (a crop past the frame).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"pixel_kd_loss: student {tuple(student_logits.shape)} vs teacher "
                         f"{tuple(teacher_logits.shape)}")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    if mask is not None:
        m = mask[:, 0].to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0) * temperature**2
    return kl.mean() * temperature**2


def pooled_unit_features(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,P) pooled to ``grid`` and L2-normalised over channels.

    Pooling first keeps the P x P affinity small (8x16 -> 128 x 128) whatever the input size.
    """
    pooled = F.adaptive_avg_pool2d(features.float(), grid)
    return F.normalize(pooled.flatten(2), dim=1)


def affinity(feat_a: torch.Tensor, feat_b: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cosine similarity between every pooled position of a and of b, (N, P, P).

    Channel counts of a and b must match each other, but student and teacher matrices are both
    P x P, so they compare even though the networks' feature widths differ.
    """
    a = pooled_unit_features(feat_a, grid)
    b = pooled_unit_features(feat_b, grid)
    return torch.bmm(a.transpose(1, 2), b)


def pf_loss(student_t: torch.Tensor, student_tk: torch.Tensor, teacher_t: torch.Tensor,
            teacher_tk: torch.Tensor, grid: tuple[int, int] = (8, 16)) -> torch.Tensor:
    """Pair-wise-frames dependency: inter-frame affinity (t vs t+k), student vs teacher, MSE."""
    with torch.no_grad():
        target = affinity(teacher_t.detach(), teacher_tk.detach(), grid)
    return F.mse_loss(affinity(student_t, student_tk, grid), target)


def structured_loss(student: torch.Tensor, teacher: torch.Tensor,
                    grid: tuple[int, int] = (8, 16)) -> torch.Tensor:
    """Structured intra-frame KD: affinity within one frame, student vs teacher, MSE."""
    with torch.no_grad():
        target = affinity(teacher.detach(), teacher.detach(), grid)
    return F.mse_loss(affinity(student, student, grid), target)


class FrozenConvLSTMCell(nn.Module):
    """One ConvLSTM cell whose weights are fixed random buffers, never parameters.

    Why frozen: MF compares the student's and teacher's final LSTM states. If the LSTM were
    trained by this loss it could simply map every input to the same state (e.g. saturate the
    gates) and drive the loss to zero without the student learning anything. A fixed random
    projection, seeded so runs are reproducible and shared by student and teacher, keeps the
    loss an honest distance between the two affinity sequences. Stored as buffers so no optimizer
    can pick the weights up and ``.to(device)`` still moves them.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 8, kernel_size: int = 3,
                 seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        fan_in = (in_channels + hidden_channels) * kernel_size * kernel_size
        bound = fan_in ** -0.5
        shape = (4 * hidden_channels, in_channels + hidden_channels, kernel_size, kernel_size)
        self.register_buffer("weight", (torch.rand(shape, generator=gen) * 2 - 1) * bound)
        self.register_buffer("bias", (torch.rand(4 * hidden_channels, generator=gen) * 2 - 1)
                             * bound)
        self.hidden_channels = hidden_channels
        self.padding = kernel_size // 2

    def forward(self, sequence: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run (N, C, h, w) inputs in order from zero state; return the final (hidden, cell)."""
        n, _, h, w = sequence[0].shape
        hid = sequence[0].new_zeros(n, self.hidden_channels, h, w)
        cell = torch.zeros_like(hid)
        for x in sequence:
            gates = F.conv2d(torch.cat((x, hid), 1), self.weight.to(x.dtype),
                             self.bias.to(x.dtype), padding=self.padding)
            i, f, o, g = gates.chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
        return hid, cell


class MultiFrameDependencyLoss(nn.Module):
    """MF: per-frame intra affinity maps (P channels on the h x w grid) through a shared frozen
    ConvLSTM; MSE between the student's and teacher's final hidden and cell states."""

    def __init__(self, grid: tuple[int, int] = (8, 16), hidden_channels: int = 8,
                 seed: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.lstm = FrozenConvLSTMCell(grid[0] * grid[1], hidden_channels, seed=seed)

    def _affinity_maps(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        gh, gw = self.grid
        return [affinity(f, f, self.grid).reshape(f.shape[0], gh * gw, gh, gw) for f in frames]

    def forward(self, student: Sequence[torch.Tensor],
                teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features of the clip's frames in time order (e.g. t-k, t, t+k), student and teacher."""
        if len(student) != len(teacher) or len(student) < 2:
            raise ValueError(f"MF needs the same >= 2 frames from student and teacher, got "
                             f"{len(student)} and {len(teacher)}")
        h_s, c_s = self.lstm(self._affinity_maps(student))
        with torch.no_grad():
            h_t, c_t = self.lstm(self._affinity_maps([t.detach() for t in teacher]))
        return F.mse_loss(h_s, h_t) + F.mse_loss(c_s, c_t)


class ETCLoss(nn.Module):
    """Weighted sum of the ETC terms; terms with weight 0 are not computed.

    ``weights`` keys are from ``LOSS_TERMS``; missing keys take ``DEFAULT_WEIGHTS`` (CE 1, rest 0),
    so the baseline config needs no weights at all. Returns (total, parts) with the unweighted,
    detached parts for logging.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, aux_weight: float = 0.4,
                 temperature: float = 1.0, grid: tuple[int, int] = (8, 16),
                 mf_hidden_channels: int = 8, mf_seed: int = 0) -> None:
        super().__init__()
        unknown = set(weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; valid: {list(LOSS_TERMS)}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.aux_weight = aux_weight
        self.temperature = temperature
        self.grid = tuple(grid)
        self.mf = MultiFrameDependencyLoss(self.grid, mf_hidden_channels, mf_seed)

    @property
    def needs_teacher(self) -> bool:
        """Whether the caller must run the teacher (any distillation term is on)."""
        return any(self.weights[k] > 0 for k in ("kd", "pf", "structured", "mf"))

    def forward(self, student: Sequence[TrainOutput], target: torch.Tensor, *,
                teacher: Sequence[TrainOutput] | None = None,
                images: Sequence[torch.Tensor] | None = None,
                flow_fw: torch.Tensor | None = None, flow_bw: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, center: int = 0, neighbor: int = 1,
                teacher_valid: Sequence[torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Losses for one clip batch.

        ``student``/``teacher``/``images``: per clip frame in time order; ``target`` labels
        frame ``center``; ``flow_fw``/``flow_bw`` (N,2,H,W) go ``center -> neighbor`` and back.
        ``teacher_valid``: per frame (N,1,H,W), where the teacher's logits are real targets.
        """
        w = self.weights
        if self.needs_teacher and (teacher is None or len(teacher) != len(student)):
            raise ValueError("distillation weights are set but teacher outputs for every clip "
                             "frame were not given")
        parts: dict[str, torch.Tensor] = {}
        s_c = student[center]
        if w["ce"] > 0:
            parts["ce"] = segmentation_loss(s_c.logits, target, s_c.aux_logits, self.aux_weight)
        if w["temporal"] > 0:
            if flow_fw is None:
                raise ValueError("temporal loss weight is set but no flow was given")
            parts["temporal"] = temporal_loss(
                s_c.logits, student[neighbor].logits, flow_fw, mask=mask,
                img_t=None if images is None else images[center],
                img_tk=None if images is None else images[neighbor], flow_tk_to_t=flow_bw)
        if teacher is not None:
            if w["kd"] > 0:
                valid = teacher_valid or [None] * len(student)
                parts["kd"] = torch.stack([
                    pixel_kd_loss(s.logits, t.logits, self.temperature, v)
                    for s, t, v in zip(student, teacher, valid, strict=True)]).mean()
            if w["pf"] > 0:
                parts["pf"] = pf_loss(s_c.features, student[neighbor].features,
                                      teacher[center].features, teacher[neighbor].features,
                                      self.grid)
            if w["structured"] > 0:
                parts["structured"] = torch.stack(
                    [structured_loss(s.features, t.features, self.grid)
                     for s, t in zip(student, teacher, strict=True)]).mean()
            if w["mf"] > 0:
                parts["mf"] = self.mf([s.features for s in student],
                                      [t.features for t in teacher])
        if not parts:
            raise ValueError("all loss weights are zero")
        total = sum(w[k] * v for k, v in parts.items())
        logged = {k: v.detach() for k, v in parts.items()}
        logged["total"] = total.detach()
        return total, logged
