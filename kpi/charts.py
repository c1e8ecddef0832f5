"""KPI charts as inline SVG (no script, no external resources): used by the dashboard
(allowed by its Content-Security-Policy) and by the PDF reports (WeasyPrint draws SVG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from kpi.tables import WEEKDAYS_JA


def bar_chart(series: Mapping[str, Sequence[float]], labels: Sequence[str], *,
              colors: Sequence[str] = ("#2b6cb0", "#9bbce0"), width: int = 680,
              height: int = 220, title: str = "") -> str:
    """Grouped bars as SVG (no script, no external resources)."""
    left, bottom, top = 40, 30, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([max(v) if v else 0 for v in series.values()] + [1])
    n = max(len(labels), 1)
    group_w = plot_w / n
    bar_w = max(group_w / (len(series) + 1), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" font-size="12">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
             f'y2="{top + plot_h}" stroke="#555"/>',
             f'<text x="4" y="{top + 10}" font-size="10">{peak:g}</text>']
    for s_i, (name, values) in enumerate(series.items()):
        color = colors[s_i % len(colors)]
        for i, v in enumerate(values):
            h = plot_h * v / peak
            x = left + i * group_w + s_i * bar_w + bar_w / 2
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{escape(labels[i])} '
                         f'{escape(name)} {v:g}</title></rect>')
        parts.append(f'<rect x="{left + plot_w - 150 + s_i * 75}" y="4" width="10" height="10" '
                     f'fill="{color}"/><text x="{left + plot_w - 136 + s_i * 75}" y="13" '
                     f'font-size="10">{escape(name)}</text>')
    step = max(1, n // 16)
    for i in range(0, len(labels), step):
        x = left + i * group_w + group_w / 2
        parts.append(f'<text x="{x:.1f}" y="{height - 12}" font-size="9" '
                     f'text-anchor="middle">{escape(labels[i])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def heatmap_svg(cells: Mapping[tuple[int, int], int], *, title: str = "") -> str:
    """Weekday x hour-of-day heat map of offered calls."""
    hours = sorted({h for (_d, h) in cells}) or list(range(8, 18))
    peak = max(list(cells.values()) + [1])
    cw, ch, left, top = 34, 20, 30, 34
    width, height = left + cw * len(hours) + 10, top + ch * 7 + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="0" y="12" font-size="12">{escape(title)}</text>']
    for j, h in enumerate(hours):
        parts.append(f'<text x="{left + j * cw + cw / 2}" y="{top - 4}" font-size="9" '
                     f'text-anchor="middle">{h:02d}</text>')
    for d in range(7):
        parts.append(f'<text x="4" y="{top + d * ch + 14}" font-size="10">{WEEKDAYS_JA[d]}</text>')
        for j, h in enumerate(hours):
            v = cells.get((d, h), 0)
            shade = int(255 - 200 * v / peak)
            parts.append(f'<rect x="{left + j * cw}" y="{top + d * ch}" width="{cw - 1}" '
                         f'height="{ch - 1}" fill="rgb({shade},{shade + (255 - shade) // 3},255)">'
                         f'<title>{WEEKDAYS_JA[d]} {h:02d}時 {v}</title></rect>')
            if v:
                parts.append(f'<text x="{left + j * cw + cw / 2}" y="{top + d * ch + 14}" '
                             f'font-size="9" text-anchor="middle">{v}</text>')
    parts.append("</svg>")
    return "".join(parts)


