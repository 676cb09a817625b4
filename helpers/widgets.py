"""Sliders for the notebooks, written for both ipywidgets 7 (Colab) and 8 (JupyterLab 4).

Only API both versions share is used: ``IntSlider``, ``FloatSlider``,
``SelectionSlider``, ``Dropdown``, ``Checkbox``, ``HBox``/``VBox`` and
``interactive_output``. The callback runs once straight away with the default values
(so a notebook run without anyone touching a slider, as in CI, still shows a result),
then again on every change, redrawing into the same output area instead of stacking
plots underneath each other.
"""

from __future__ import annotations

from typing import Callable, Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display


def show_figure(figure: plt.Figure) -> None:
    """Display a figure inside a widget output and close it, so it is not drawn twice."""
    display(figure)
    plt.close(figure)


def slider_panel(controls: Mapping[str, widgets.Widget], callback: Callable[..., object],
                 columns: int = 3, continuous: bool = False) -> widgets.VBox:
    """Controls in rows above one output area; ``callback(**values)`` redraws it.

    A figure returned by the callback is displayed (and closed); other values are
    displayed as they are. ``continuous=False`` waits for the mouse to be released
    before recomputing, which matters when the callback trains something.
    """
    for control in controls.values():
        if hasattr(control, "continuous_update"):
            control.continuous_update = continuous

    def redraw(**values):
        result = callback(**values)
        if isinstance(result, plt.Figure):
            show_figure(result)
        elif result is not None:
            display(result)

    output = widgets.interactive_output(redraw, dict(controls))
    items = list(controls.values())
    rows = [widgets.HBox(items[i:i + columns]) for i in range(0, len(items), columns)]
    return widgets.VBox([*rows, output])
