"""Helpers for the transfer-learning flower course: the notebooks' code, saved for reuse.

One module per part of the course: ``config`` (settings, seeding, device, precision), ``data`` (images and
loaders, notebooks 01-02), ``download`` (Flowers102, the tiny slice), ``model`` (03, 07), ``train`` (the
loop, 04), ``features`` (05), ``checkpoint``, ``inference`` (06), ``plots``, ``widgets`` and ``cli``
(``python -m helpers``). Importing ``helpers`` has no side effects; import the module you need.
"""

__version__ = "0.3.0"
