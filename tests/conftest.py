"""Shared fixtures. Each area keeps its fixtures in its own module, imported here so every test sees them."""

from fixtures_core import *  # noqa: F403
from fixtures_gearman import *  # noqa: F403
from fixtures_pipeline import *  # noqa: F403
from fixtures_reliability import *  # noqa: F403
from fixtures_s3 import *  # noqa: F403
