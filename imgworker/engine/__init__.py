"""The processing engine's array side: what the ``array`` executor of every pipeline step is written against.

A step has two executors (imgworker/pipeline/steps/base.py): ``vips`` (libvips on the CPU) and ``array``
(an array module ``xp``: CuPy on the GPU, NumPy as its reference and for ``--backend numpy``). Modules:

- ``arrays``: libvips image <-> (H, W, C) array, alpha split/join, upload/download.
- ``colour``: sRGB <-> linear <-> XYZ <-> Lab <-> LCh in ``xp`` (libvips' D65 formulas).
- ``filters``: libvips' integer Gaussian mask, separable convolution, 3x3 median, on ``xp``.
- ``smartcrop``: libvips' ``attention`` and ``entropy`` heuristics on ``xp``.
- ``executor``: run a pipeline's steps on an array, frame by frame for animations.
"""
