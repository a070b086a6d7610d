"""The one place tests find their images: the repository's own copies: the sample photos in
``examples/images`` and the hostile files in ``tests/images/bad``.

``photo(kind)`` names a photo by what it is, not by its file name (the shipped files are downscaled variants of
the team's full-size corpus, so their names carry other sizes). Large images (20 MP, 20000x20000) are generated
at test time by the tests that need them (``large_jpeg``).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "examples" / "images"  # the demo's sample photos are the tests' photos too
BAD = REPO / "tests" / "images" / "bad"

# kind -> glob inside PHOTOS; each matches exactly one file.
KINDS = {
    "baseline": "kleiber_*_baseline.jpg",  # the largest baseline JPEG
    "progressive": "seeding_*_progressive.jpg",
    "dragonfly": "dragonfly_*_baseline.jpg",
    "exif6": "dragonfly_exif_orientation6.jpg",  # pixels stored rotated, EXIF Orientation=6
    "cmyk": "bridge_*_cmyk.jpg",  # CMYK with an embedded CMYK ICC profile
    "webp": "sunset_*.webp",
    "rgba": "sunset_*_rgba.png",
    "rgb16": "bridge_*_rgb16.png",
    "png_named_jpg": "dragonfly_*_png_named.jpg",  # a PNG under a .jpg name
}


def photo(kind: str) -> Path:
    """The shipped photo of ``kind`` (a key of KINDS)."""
    if kind not in KINDS:
        raise KeyError(f"unknown photo kind {kind!r}; known: {', '.join(KINDS)}")
    found = sorted(PHOTOS.glob(KINDS[kind]))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {KINDS[kind]} in {PHOTOS}, found {len(found)}")
    return found[0]


def photos() -> list[Path]:
    """Every shipped photo, sorted by name."""
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() != ".md")


def bad(name: str) -> Path:
    """A hostile file from BAD by its file name (the same names as ../shared/corpus/bad)."""
    path = BAD / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def make_large_jpeg(path: Path, width: int = 6028, height: int = 3391, *, progressive: bool = False) -> Path:
    """A full-size (default 20 MP) photo for the tests that need one: the shipped baseline photo upscaled.

    Made at test time so the repository stays small; about half a second on one core.
    """
    import pyvips

    src = pyvips.Image.new_from_file(str(photo("baseline")))
    big = src.resize(width / src.width, vscale=height / src.height)
    big.jpegsave(str(path), Q=90, interlace=progressive)
    return path
