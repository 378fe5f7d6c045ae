"""The dashboard's time series: one sample per snapshot, plotted with Vega-Lite.

Why Vega-Lite: JupyterLab renders the `application/vnd.vegalite.v5+json` MIME type natively
(its built-in `@jupyterlab/vega5-extension`, in every JupyterLab 4), so the plot needs no
Python plotting package, no lab extension and no custom JavaScript: the widget sends a spec
with the data inline, and the frontend draws it (svg). Other frontends show the text/plain
fallback.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

VEGALITE_MIME = "application/vnd.vegalite.v5+json"
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"

# series: (data key, legend label, colour, dashed)
WORK = [
    ("queued", "queued", "#bf8700", False),
    ("running", "in progress", "#0969da", False),
    ("workers", "workers", "#1a7f37", False),
    ("desired", "desired workers", "#4ac26b", True),
]
THROUGHPUT = [("per_s", "completed/s", "#8250df", False)]
LATENCY = [
    ("p50", "p50", "#0969da", False),
    ("p95", "p95", "#cf222e", False),
]
# each panel has its own series: its own colours and legend
_INDEPENDENT = {"scale": {"color": "independent"}, "legend": {"color": "independent"}}


@dataclass(frozen=True)
class Sample:
    """One snapshot of an API, as the plot needs it."""

    t_ms: int  # when the dashboard took it (epoch milliseconds: Vega's temporal unit)
    queued: int
    running: int
    workers: int
    desired: int
    per_s: float | None
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, now: float, status: dict[str, Any]) -> Sample:
        stats = status.get("stats") or {}
        return cls(
            t_ms=int(now * 1000),
            queued=int(status.get("queue_depth", 0)),
            running=int(status.get("in_progress", 0)),
            workers=int(status.get("workers", 0)),
            desired=int(status.get("desired_workers", 0)),
            per_s=_number(stats.get("completed_per_s")),
            p50=_number(stats.get("latency_p50_s")),
            p95=_number(stats.get("latency_p95_s")),
        )

    def row(self) -> dict[str, Any]:
        return {
            "t": self.t_ms,
            "queued": self.queued,
            "running": self.running,
            "workers": self.workers,
            "desired": self.desired,
            "per_s": self.per_s,
            "p50": self.p50,
            "p95": self.p95,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _lines(series: list[tuple[str, str, str, bool]], dashed: bool) -> dict[str, Any]:
    """One layer: lines of some fields of the samples, folded into (series, value) pairs."""
    label = "'?'"
    for key, name, _, _ in reversed(series):
        label = f"datum.key === '{key}' ? '{name}' : {label}"
    mark: dict[str, Any] = {"type": "line", "interpolate": "step-after", "strokeWidth": 1.8}
    if dashed:
        mark["strokeDash"] = [5, 3]
    return {
        "transform": [
            {"fold": [key for key, _, _, _ in series], "as": ["key", "value"]},
            {"calculate": label, "as": "series"},
        ],
        "mark": mark,
    }


def _panel(
    title: str, series: list[tuple[str, str, str, bool]], y_title: str, width: int, height: int
) -> dict[str, Any]:
    """A time plot of some fields; dashed series are drawn last, over the solid ones."""
    names = [name for _, name, _, _ in series]
    solid = [s for s in series if not s[3]]
    dashed = [s for s in series if s[3]]
    return {
        "title": {"text": title, "anchor": "start", "fontSize": 12, "fontWeight": "normal"},
        "width": width,
        "height": height,
        "encoding": {
            "x": {
                "field": "t",
                "type": "temporal",
                "title": None,
                "axis": {"format": "%H:%M:%S", "labelOverlap": True, "tickCount": 6},
            },
            "y": {"field": "value", "type": "quantitative", "title": y_title},
            "color": {
                "field": "series",
                "type": "nominal",
                "scale": {"domain": names, "range": [c for _, _, c, _ in series]},
                "legend": {"title": None, "orient": "right"},
            },
            "tooltip": [
                {"field": "t", "type": "temporal", "format": "%H:%M:%S", "title": "time"},
                {"field": "series", "type": "nominal"},
                {"field": "value", "type": "quantitative", "format": ".3~f"},
            ],
        },
        "layer": [_lines(solid, False)] + ([_lines(dashed, True)] if dashed else []),
    }


class Timeline:
    """The samples of the last `history_s` seconds (one per snapshot), and their plot."""

    def __init__(self, history_s: float = 600.0, interval: float = 1.0) -> None:
        self.history_s = history_s
        self._samples: deque[Sample] = deque(maxlen=max(2, math.ceil(history_s / interval) + 1))

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def add(self, now: float, status: dict[str, Any]) -> Sample:
        sample = Sample.of(now, status)
        while self._samples and self._samples[0].t_ms < sample.t_ms - self.history_s * 1000:
            self._samples.popleft()
        self._samples.append(sample)
        return sample

    def spec(self) -> dict[str, Any]:
        """The Vega-Lite spec of the samples: work on top, throughput and latency below."""
        return {
            "$schema": SCHEMA,
            "data": {"values": [s.row() for s in self._samples]},
            "vconcat": [
                _panel("queue, work in progress and workers", WORK, "count", 560, 110),
                {
                    "hconcat": [
                        _panel("throughput (last 60 s)", THROUGHPUT, "completed/s", 230, 70),
                        _panel("latency, end to end (last 60 s)", LATENCY, "seconds", 230, 70),
                    ],
                    "resolve": _INDEPENDENT,
                },
            ],
            "resolve": _INDEPENDENT,
            "config": {
                "view": {"stroke": None},
                "axis": {"labelFontSize": 10, "titleFontSize": 10, "grid": True},
                "legend": {"labelFontSize": 10},
                "concat": {"spacing": 12},
            },
        }

    def outputs(self) -> tuple[dict[str, Any], ...]:
        """The plot as the `outputs` of an `ipywidgets.Output`: one display_data message."""
        last = self._samples[-1] if self._samples else None
        text = (
            f"<plot of the last {len(self)} samples: queued {last.queued}, in progress "
            f"{last.running}, workers {last.workers}/{last.desired}>"
            if last
            else "<plot: no samples yet>"
        )
        return (
            {
                "output_type": "display_data",
                "data": {VEGALITE_MIME: self.spec(), "text/plain": text},
                "metadata": {VEGALITE_MIME: {"embed_options": {"renderer": "svg"}}},
            },
        )
