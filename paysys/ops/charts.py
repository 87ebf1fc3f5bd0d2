"""Small bar charts drawn on the server as inline SVG: no script, no library, nothing from a CDN."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 360, 70


def stacked_bars(series: list[tuple[str, str, list[int]]], *, title: str) -> SafeString:
    """One bar per minute, the series stacked bottom up in the order given: ``(label, colour,
    counts)``. The tallest bar fills the height; each bar's tooltip says its minute and counts."""
    minutes = max((len(counts) for _, _, counts in series), default=0)
    if not minutes:
        return format_html("")
    totals = [sum(counts[i] for _, _, counts in series) for i in range(minutes)]
    top = max(totals) or 1
    step = WIDTH / minutes
    bars = []
    for i in range(minutes):
        y = HEIGHT
        tip = f"{minutes - i - 1} min ago: " + ", ".join(
            f"{counts[i]} {label}" for label, _, counts in series
        )
        for _label, colour, counts in series:
            h = counts[i] * HEIGHT / top
            if h:
                y -= h
                bars.append(
                    (
                        f"{i * step:.1f}",
                        f"{y:.1f}",
                        f"{max(step - 1, 1):.1f}",
                        f"{h:.1f}",
                        colour,
                        tip,
                    )
                )
    legend = format_html_join(
        " ",
        '<span class="legend" style="color:{}">&#9632; {} ({})</span>',
        ((colour, label, sum(counts)) for label, colour, counts in series),
    )
    rects = format_html_join(
        "", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', bars
    )
    return format_html(
        '<figure class="chart"><figcaption>{} <small>(last hour, per minute, peak {})</small><br>{}</figcaption>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<rect width="{}" height="{}" fill="#f6f6f6"></rect>{}</svg></figure>',
        title,
        max(totals),
        legend,
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        title,
        WIDTH,
        HEIGHT,
        rects,
    )
