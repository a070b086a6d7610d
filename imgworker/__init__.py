"""imgworker: image-processing workers for the Gearman job protocol."""

from __future__ import annotations

from imgworker.client import Client, Result
from imgworker.core.errors import ImgworkerError

__version__ = "0.1.0"
__all__ = ["Client", "ImgworkerError", "Result", "__version__"]
