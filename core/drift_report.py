"""The drift report a person reads: one self-contained HTML page per check.

The summary (rows, how many features drifted, the thresholds), the model's metrics on
the labelled rows beside its holdout's, the table of every feature sorted by drift (most
first: drifted ones, then by statistic in units of its threshold), and the distributions
of the most drifted features (``drift.plotted``) against the reference as bars drawn in
inline SVG: no script, no stylesheet or font from elsewhere; the MLflow UI shows it as an
artifact, and a browser opens it from a file.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from core.drift import DriftResult, FeatureDrift

REPORT_NAME = "drift_report.html"
STATISTIC_NAMES = {"psi": "PSI", "jensen_shannon": "Jensen–Shannon"}
REFERENCE_COLOUR, BATCH_COLOUR = "#8c96a3", "#e4572e"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 72em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.drifted td { background: #fde8e2; }
td.note { text-align: left; font-size: 0.9em; color: #555; }
h3 { margin-bottom: 0.2em; }
"""


def _number(value: float) -> str:
    return "n/a" if value != value else f"{value:.4g}"  # NaN is not equal to itself


def feature_table(features: Sequence[FeatureDrift]) -> str:
    rows = [
        '<table id="features"><thead><tr><th>feature</th><th>kind</th><th>statistic</th><th>value</th>'
        "<th>threshold</th><th>p-value (chi-square)</th><th>drifted</th><th>note</th></tr></thead><tbody>"
    ]
    for f in features:
        rows.append(
            f'<tr class="{"drifted" if f.drifted else "steady"}"><td>{html.escape(f.name)}</td><td>{f.kind}</td>'
            f"<td>{STATISTIC_NAMES[f.statistic]}</td><td>{_number(f.value)}</td><td>{_number(f.threshold)}</td>"
            f"<td>{f.p_value:.3g}</td><td>{'yes' if f.drifted else 'no'}</td>"
            f'<td class="note">{html.escape(f.note)}</td></tr>'
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def metrics_table(result: DriftResult) -> str:
    drops = result.drops()
    rows = [
        '<table id="metrics"><thead><tr><th>metric</th><th>holdout</th><th>this batch</th>'
        "<th>drop (larger: worse)</th></tr></thead><tbody>"
    ]
    for name, value in result.batch_metrics.items():
        holdout = result.holdout_metrics.get(name, float("nan"))
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_number(holdout)}</td><td>{_number(value)}</td>"
            f"<td>{_number(drops.get(name, float('nan')))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def bars(feature: FeatureDrift, height: int = 170) -> str:
    """The shares of the reference and of the batch in each bin, side by side, as SVG."""
    group = 44
    left, top, bottom = 44, 10, 46
    width = left + group * len(feature.bins) + 10
    peak = max([*feature.reference, *feature.batch, 1e-9])
    scale = (height - top - bottom) / peak
    base = height - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18}" font-family="sans-serif" role="img" '
        f'aria-label="{html.escape(feature.name)}: shares per bin, reference and batch">',
        f'<line x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}" stroke="#444"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{peak:.0%}</text>',
        f'<text x="{left - 4}" y="{base}" font-size="10" text-anchor="end">0%</text>',
    ]
    for i, label in enumerate(feature.bins):
        x = left + i * group + 4
        for offset, share, colour, who in (
            (0, feature.reference[i], REFERENCE_COLOUR, "training data"),
            (18, feature.batch[i], BATCH_COLOUR, "this batch"),
        ):
            h = share * scale
            parts.append(
                f'<rect x="{x + offset}" y="{base - h:.1f}" width="16" height="{h:.1f}" fill="{colour}">'
                f"<title>{html.escape(label)}: {who} {share:.1%}</title></rect>"
            )
        short = label if len(label) <= 9 else label[:8] + "…"
        parts.append(
            f'<text x="{x + 17}" y="{base + 12}" font-size="9" text-anchor="end" '
            f'transform="rotate(-35 {x + 17} {base + 12})">{html.escape(short)}<title>{html.escape(label)}</title></text>'
        )
    legend = height + 12
    parts += [
        f'<rect x="{left}" y="{legend - 9}" width="10" height="10" fill="{REFERENCE_COLOUR}"/>',
        f'<text x="{left + 14}" y="{legend}" font-size="11">training data</text>',
        f'<rect x="{left + 110}" y="{legend - 9}" width="10" height="10" fill="{BATCH_COLOUR}"/>',
        f'<text x="{left + 124}" y="{legend}" font-size="11">this batch</text>',
        "</svg>",
    ]
    return "".join(parts)


def render(result: DriftResult, settings, checked_at: str, decision: str | None = None) -> str:
    """The page for one check: ``settings`` is ``drift`` of the config, ``decision`` a
    retraining decision to show (``ops.retrain --when drift``)."""
    from pathlib import Path

    title = f"Drift of {Path(result.source).name} against the training data of {result.model or 'the model'}"
    summary = [
        f"{result.rows} rows of {result.source}, checked at {checked_at}, against the {result.reference_rows} "
        f"rows {result.model or 'the model'} was trained on.",
        f"{len(result.drifted)} of {len(result.features)} features drifted (share {result.share:.2f}).",
        f"A number has drifted when its PSI is at least {settings.psi:g}, a category when its Jensen–Shannon "
        f"distance is at least {settings.jensen_shannon:g}, and in both cases the chi-square test of its binned "
        f"counts against the training data's gives p < {settings.p_value:g}.",
    ]
    if decision:
        summary.append(decision)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in summary),
    ]
    if result.labelled_rows:
        parts += [f"<h2>The model on the {result.labelled_rows} labelled rows</h2>", metrics_table(result)]
    parts += ["<h2>Features, most drifted first</h2>", feature_table(result.features)]
    shown = result.features[: int(settings.plotted)]
    if shown:
        parts.append("<h2>Distributions of the most drifted features</h2>")
    for feature in shown:
        verdict = "drifted" if feature.drifted else "not drifted"
        parts += [
            f"<h3>{html.escape(feature.name)}: {STATISTIC_NAMES[feature.statistic]} {_number(feature.value)} "
            f"({verdict})</h3>",
            bars(feature),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
