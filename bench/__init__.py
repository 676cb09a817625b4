"""Speed measurements for the course: ``python -m bench`` prints a table of images per second.

Not tests: the numbers depend on the machine and on what else runs on it. Each row
times one stage (decoding, the backbone, a training epoch, feature extraction, a head
experiment on cached features); ratios compare stages measured in the same run, with
repeats interleaved so that a busy machine slows both sides of a ratio alike.
Everything runs offline: random weights, generated images.
"""
