"""The matplotlib plot the dock widgets share: a themed canvas, axes and legend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LINE_COLOR = "#4aa3df"


def theme_colors(viewer: Any) -> tuple[str, str]:
    """(background, text) of the viewer's theme; a dark default otherwise."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return theme.background.as_hex(), theme.text.as_hex()
    except Exception:
        return "#262930", "#f0f1f2"


class Canvas(FigureCanvasQTAgg):
    """A canvas with fixed pixel margins (constrained layout warns when tiny)."""

    MARGINS_PX = (58, 12, 40, 62)  # left, right, bottom, top (legend above the axes)

    def draw(self) -> None:
        fig = self.figure
        w, h = fig.get_size_inches() * fig.dpi
        left, right, bottom, top = self.MARGINS_PX
        if w > left + right + 20 and h > bottom + top + 20:
            fig.subplots_adjust(
                left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h
            )
        super().draw()


def make_plot(
    background: str, height_in: float, min_height_px: int
) -> tuple[Figure, Axes, Canvas]:
    """A 4-inch-wide figure with one axes on an expanding :class:`Canvas`."""
    figure = Figure(figsize=(4.0, height_in), dpi=100)
    figure.set_facecolor(background)
    axes = figure.add_subplot()
    canvas = Canvas(figure)
    canvas.setMinimumHeight(min_height_px)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    return figure, axes, canvas


def style_axes(ax: Axes, background: str, foreground: str) -> None:
    """Theme colours on freshly cleared axes: face, spines, ticks, labels, title."""
    ax.set_facecolor(background)
    for spine in ax.spines.values():
        spine.set_color(foreground)
    ax.tick_params(colors=foreground, labelsize=8)
    ax.xaxis.label.set_color(foreground)
    ax.yaxis.label.set_color(foreground)
    ax.title.set_color(foreground)


def placeholder(ax: Axes, text: str, color: str, **kwargs: Any) -> None:
    """``text`` centred in empty axes, without ticks."""
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        color=color,
        transform=ax.transAxes,
        **kwargs,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def top_legend(ax: Axes, color: str, **kwargs: Any) -> None:
    """The legend above the axes, in the canvas' top margin (never hides the data)."""
    legend = ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.02, 1.0, 0.1),
        mode="expand",
        borderaxespad=0.0,
        fontsize=7,
        frameon=False,
        **kwargs,
    )
    for text in legend.get_texts():
        text.set_color(color)
