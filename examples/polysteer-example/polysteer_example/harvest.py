"""The example model's parts of polysteer's harvest: how prompt frames run, what they measure.

* renderer ``example-frames``: a batch of prompt frames ``(n_bins, T)`` through the model (the
  prompt pass only: the harvest stops after the deepest captured site);
* measured attribute ``example-frame-centroid``: the spectral centroid of the frame each row is
  (use it with the core row selector ``all``: one row per prompt frame).

With them, ``polysteer.build_concept`` makes a "brighter" probe on this model like on any other.
"""

from __future__ import annotations

from typing import Any

import torch
from polysteer.workflows import Rendered, Rows


class FramePrompts:
    """Renderer ``example-frames``: one prompt pass over a batch of ``(n_bins, T)`` frames."""

    stop_early = True  # the centroid is read from the inputs: no output is needed

    def render(self, adapter: Any, rendered: Rendered) -> None:
        frames = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in rendered.inputs])
        rendered.info["frames"] = frames
        rendered.outputs = adapter.generate(frames, max_new_frames=1)


def frame_centroid() -> Any:
    """Measured attribute ``example-frame-centroid``: per row (prompt frame), the magnitude-weighted
    mean bin index of that frame."""
    def attribute(rendered: Rendered, rows: Rows) -> torch.Tensor:
        frames = rendered.info["frames"]  # (B, n_bins, T)
        magnitude = frames.abs()
        bins = torch.arange(frames.shape[1], dtype=frames.dtype)
        per_frame = (magnitude * bins[:, None]).sum(1) / magnitude.sum(1).clamp_min(1e-12)  # (B, T)
        if len(rows.rows) != per_frame.numel():
            raise ValueError("example-frame-centroid needs one row per prompt frame (row selector 'all')")
        return per_frame.reshape(-1)
    return attribute
