"""imgworker: image-processing workers for the Gearman job protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgworker.core.errors import ImgworkerError

__version__ = "0.1.0"
__all__ = ["Client", "ImgworkerError", "Result", "__version__"]

if TYPE_CHECKING:
    from imgworker.client import Client, Result


def __getattr__(name: str) -> Any:
    # Lazy: importing imgworker.core.errors or the CLI must not pull in the Gearman client.
    if name in ("Client", "Result"):
        from imgworker import client

        return getattr(client, name)
    raise AttributeError(name)
