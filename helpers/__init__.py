"""Helpers for the transfer-learning flower course: the notebooks' code, saved for reuse.

Each module holds what one part of the course writes:

- ``config``: settings from environment variables, seeding, device and precision (all notebooks);
- ``data``: images, transforms, ``FlowerFolder`` and ``make_loaders`` (notebooks 01 and 02);
- ``download``: Oxford 102 Flowers, the generated tiny slice, the offline check;
- ``model``: backbones, the head, freezing and unfreezing (notebooks 03 and 07);
- ``train``: the training loop, ``fit``, and the one inference path (notebook 04);
- ``features``: cached backbone features and the overfitting experiments (notebook 05);
- ``checkpoint``: saving and loading classifiers safely;
- ``inference``: top-k prediction and judging a whole split (notebook 06);
- ``plots`` and ``widgets``: figures, tables and sliders;
- ``cli``: ``python -m helpers train | predict | tiny | prepare``.

Importing ``helpers`` has no side effects; import the module you need.
"""

__version__ = "0.2.0"
