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
from torch import nn

from helpers.models import build_head, count_parameters


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


# ---------------------------------------------------------------------------------------
# The head explorer (notebook 03): sliders for hidden layers, units and dropout.

HIDDEN_LAYER_RANGE = (0, 3)
UNIT_CHOICES = (16, 32, 64, 128, 256, 512, 1024, 2048)
DROPOUT_RANGE = (0.0, 0.8)


class HeadSummary:
    """A head built from slider values, with its parameter count and a readable description.

    In a notebook it displays as its text; tests read ``head``, ``trainable`` and ``text``.
    """

    def __init__(self, head: nn.Sequential, trainable: int, text: str) -> None:
        self.head = head
        self.trainable = trainable
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe_head(in_features: int, num_classes: int, hidden_layers: int, units: int, dropout: float,
                  train_images: int | None = None) -> HeadSummary:
    """Build a head with ``hidden_layers`` layers of ``units`` each and describe its size.

    The text shows the layers, the widths from features to classes, the trainable
    parameters per linear layer, and what they cost: one multiply-add per weight and
    image, and (given ``train_images``) how many parameters there are per training image.
    """
    if hidden_layers < 0:
        raise ValueError(f"hidden_layers must be 0 or more, not {hidden_layers}.")
    head = build_head(in_features, num_classes, [units] * hidden_layers, dropout)
    linears = [(name, layer) for name, layer in head.named_children() if isinstance(layer, nn.Linear)]
    trainable = count_parameters(head)["trainable"]
    weights = sum(layer.weight.numel() for _, layer in linears)
    widths = [in_features] + [layer.out_features for _, layer in linears]
    shape = f"{_plural(hidden_layers, 'hidden layer')} of {units} units" if hidden_layers else "no hidden layer"
    if not hidden_layers:
        uses_dropout = "no dropout (it only follows hidden layers)"
    else:
        uses_dropout = f"dropout p={dropout:g} after each hidden layer" + (" (off)" if dropout == 0 else "")
    lines = [
        f"Head: {shape}, {uses_dropout}",
        str(head),
        "widths:      " + " -> ".join(f"{width:,}" for width in widths),
        "parameters:  " + " + ".join(f"{name} {count_parameters(layer)['total']:,}" for name, layer in linears)
        + f" = {trainable:,} trainable",
        f"cost:        {weights:,} multiply-adds per image (one per weight)",
    ]
    if train_images:
        lines.append(f"data:        {trainable / train_images:,.0f} parameters per training image "
                     f"({train_images:,} images)")
    return HeadSummary(head, trainable, "\n".join(lines))


def head_explorer_controls(hidden_layers: int = 1, units: int = 512, dropout: float = 0.2) -> dict[str, widgets.Widget]:
    """Sliders whose names match :func:`describe_head`'s arguments, with the course's ranges."""
    if units not in UNIT_CHOICES:
        raise ValueError(f"units must be one of {UNIT_CHOICES}, not {units}.")
    style = {"description_width": "initial"}
    return {
        "hidden_layers": widgets.IntSlider(value=hidden_layers, min=HIDDEN_LAYER_RANGE[0], max=HIDDEN_LAYER_RANGE[1],
                                           description="hidden layers", style=style),
        "units": widgets.SelectionSlider(options=list(UNIT_CHOICES), value=units, description="units", style=style),
        "dropout": widgets.FloatSlider(value=dropout, min=DROPOUT_RANGE[0], max=DROPOUT_RANGE[1], step=0.1,
                                       description="dropout", style=style),
    }
