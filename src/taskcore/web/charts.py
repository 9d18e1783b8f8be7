"""Inline SVG sparklines, rendered server-side (no JavaScript charting library)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["sparkline"]


def sparkline(
    title: str, values: Sequence[float], *, unit: str = "", width: int = 240, height: int = 48
) -> str:
    """A titled SVG polyline of ``values`` (oldest first), scaled to their maximum,
    with the latest value printed beside the title."""
    label = escape(title)
    if not values:
        return (
            f'<figure class="chart"><figcaption>{label}: no data yet</figcaption>'
            f'<svg role="img" aria-label="{label}" width="{width}" height="{height}"></svg>'
            "</figure>"
        )
    peak = max(values)
    top = max(peak, 1e-9)  # scale; an all-zero series is drawn along the bottom
    step = width / max(1, len(values) - 1)
    pad = 2
    points = " ".join(
        f"{i * step:.1f},{pad + (height - 2 * pad) * (1 - max(0.0, v) / top):.1f}"
        for i, v in enumerate(values)
    )
    latest = f"{values[-1]:.4g}{escape(unit)}"
    return (
        f'<figure class="chart"><figcaption>{label}: <b>{latest}</b> '
        f"<small>(max {peak:.4g}{escape(unit)})</small></figcaption>"
        f'<svg role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="none">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/>'
        "</svg></figure>"
    )
