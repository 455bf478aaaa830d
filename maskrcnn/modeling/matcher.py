"""Matching predictions (anchors, proposals) to ground truth, and balanced fg/bg sampling."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Matcher", "sample_balanced"]


class Matcher:
    """Assigns each prediction to the ground-truth box it overlaps most.

    The result per prediction is a GT index in [0, G), or ``BELOW_LOW`` (-1, background)
    when the best IoU is < ``low``, or ``BETWEEN`` (-2, ignored) when it lies in [low, high).
    With ``allow_low_quality_matches`` every GT also keeps the predictions that overlap it best
    (ties included), even below ``high`` (Faster R-CNN's RPN rule, so that no GT goes unmatched).
    """

    BELOW_LOW = -1
    BETWEEN = -2

    def __init__(self, *, high: float, low: float, allow_low_quality_matches: bool) -> None:
        if low > high:
            raise ValueError(f"Matcher: low threshold {low} must be <= high threshold {high}")
        self.high = high
        self.low = low
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: Tensor) -> Tensor:
        """
        Args:
            quality: (G, P) IoU between G ground-truth boxes and P predictions; G >= 1.
        Returns:
            (P,) int64 matched GT index or BELOW_LOW / BETWEEN.
        """
        if quality.shape[0] == 0:
            raise ValueError("Matcher needs at least one ground-truth box (handle empty images before)")
        matched_vals, matches = quality.max(dim=0)
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        below = matched_vals < self.low
        between = (matched_vals >= self.low) & (matched_vals < self.high)
        matches[below] = self.BELOW_LOW
        matches[between] = self.BETWEEN
        if all_matches is not None and quality.shape[1] > 0:
            best_per_gt, _ = quality.max(dim=1)
            # All predictions tied for the best overlap of some GT, including IoU 0 ties.
            _, pred_idx = torch.where(quality == best_per_gt[:, None])
            matches[pred_idx] = all_matches[pred_idx]
        return matches


def sample_balanced(labels: Tensor, *, batch_size: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Random subset of at most ``batch_size`` elements, at most ``positive_fraction`` of them positive.

    Args:
        labels: (P,) int; >= 1 positive, 0 negative, < 0 ignored.
    Returns:
        (positive indices, negative indices), int64; negatives fill what positives leave.
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    pos = positive[torch.randperm(positive.numel(), device=labels.device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), device=labels.device)[:num_neg]]
    return pos, neg
