"""Sliders for the notebooks, using only what ipywidgets 7 (Colab) and 8 (JupyterLab 4) both have.

:func:`slider_panel` runs its callback on every change and once at the start with the default
values, so a notebook run without anyone touching a slider (as in CI) still shows a result.
"""

from __future__ import annotations

from typing import Callable, Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

# One set of ranges for every head slider of the course (notebooks 03 and 05).
UNIT_CHOICES = (16, 32, 64, 128, 256, 512, 1024)
MAX_HIDDEN_LAYERS = 3
MAX_DROPOUT = 0.8
LEARNING_RATES = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)


def slider_panel(controls: Mapping[str, widgets.Widget], callback: Callable[..., object],
                 columns: int = 3) -> widgets.VBox:
    """Controls in rows above one output area that ``callback(**values)`` redraws.

    Figures are displayed and closed, text printed. The callback (which may train) runs on a slider's release.
    """
    for control in controls.values():
        if hasattr(control, "continuous_update"):
            control.continuous_update = False

    def redraw(**values):
        result = callback(**values)
        if isinstance(result, str):
            print(result)
        elif result is not None:
            display(result)
            if isinstance(result, plt.Figure):
                plt.close(result)

    output = widgets.interactive_output(redraw, dict(controls))
    items = list(controls.values())
    rows = [widgets.HBox(items[i:i + columns]) for i in range(0, len(items), columns)]
    return widgets.VBox([*rows, output])


def head_controls(hidden_layers: int = 1, units: int = 512, dropout: float = 0.2,
                  learning_rate: float | None = None) -> dict[str, widgets.Widget]:
    """Sliders for a head's hidden layers, units per layer and dropout (and a learning rate, if given)."""
    if units not in UNIT_CHOICES:
        raise ValueError(f"units must be one of {UNIT_CHOICES}, not {units}.")
    style = {"description_width": "initial"}
    controls = {
        "hidden_layers": widgets.IntSlider(value=hidden_layers, min=0, max=MAX_HIDDEN_LAYERS,
                                           description="hidden layers", style=style),
        "units": widgets.SelectionSlider(options=list(UNIT_CHOICES), value=units,
                                         description="units", style=style),
        "dropout": widgets.FloatSlider(value=dropout, min=0.0, max=MAX_DROPOUT, step=0.1,
                                       description="dropout", style=style),
    }
    if learning_rate is not None:
        options = [(f"{lr:g}", lr) for lr in LEARNING_RATES]
        controls["learning_rate"] = widgets.SelectionSlider(options=options, value=learning_rate,
                                                            description="learning rate", style=style)
    return controls
