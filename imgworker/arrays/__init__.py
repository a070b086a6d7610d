"""The processing engine's array side: what the ``array`` executor of every pipeline step is written against.

A step has two executors (imgworker/pipeline/steps/base.py): ``vips`` (libvips on the CPU) and ``array``
(an array module ``xp``: CuPy on the GPU, NumPy as its reference and for ``--backend numpy``). Modules:

- ``image``: libvips image <-> (H, W, C) array, alpha split/join, upload/download.
- ``colour``: sRGB <-> linear <-> XYZ <-> Lab <-> LCh in ``xp`` (libvips' D65 formulas).
- ``filters``: libvips' integer Gaussian mask, separable convolution, on ``xp``.
- ``resample``: the array resampler (separable reduce/enlarge weights, shared by CuPy kernels and NumPy).
- ``executor``: run a pipeline's steps on an array, frame by frame for animations.
- ``device_io``: device JPEG decode (one call per array batch) and encode for pipeline jobs on a GPU worker.
- ``orientation``: EXIF orientation applied to the pixels on ``xp`` (the sides' table: imaging/orientation.py).

Around it: imgworker/core/formats.py (the formats table), imgworker/core/options.py (one validation path),
imgworker/jobs/builtin.py (``resize`` and ``info`` as built-in pipelines: every job is a runner).
"""
