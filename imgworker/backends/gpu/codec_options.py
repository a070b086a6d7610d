"""nvImageCodec's ``options`` strings, checked by us: nvImageCodec ignores an entry it does not know, so a
misspelt option would be a silent no-op. Only the entries listed here may reach a Decoder or an Encoder.

Format (nvImageCodec's "Codec options"): space-separated ``<codec_id>:<option>=<value>`` entries; an empty
codec id (``:<option>=<value>``) is passed to every codec of the kind.
"""

from __future__ import annotations

from imgworker.core.config import ConfigError

__all__ = ["DECODER_OPTIONS", "ENCODER_OPTIONS", "checked"]

# (codec id, option) -> the values allowed (None: any integer). nvImageCodec 0.9's documented entries that we use
# or may sweep; add one here (with the test in tests/unit/backends/test_gpu_codec_options.py) before using it.
DECODER_OPTIONS: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("nvjpeg_hw_decoder", "force_batch_single"): ("0", "1"),
    ("nvjpeg_hw_decoder", "preallocate_width_hint"): None,
    ("nvjpeg_hw_decoder", "preallocate_height_hint"): None,
    ("nvjpeg_hw_decoder", "preallocate_batch_size"): None,
    ("nvjpeg_cuda_decoder", "hybrid_huffman_threshold"): None,
    ("", "num_cuda_streams"): None,
    ("", "fancy_upsampling"): ("0", "1"),
}
ENCODER_OPTIONS: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("", "num_cuda_streams"): None,
}


def checked(options: str, known: dict[tuple[str, str], tuple[str, ...] | None], what: str = "decoder") -> str:
    """``options`` unchanged if every entry is known, with an allowed value; else ConfigError naming it."""
    for entry in options.split():
        codec, sep, rest = entry.partition(":")
        option, eq, value = rest.partition("=")
        if not sep or not eq or not option:
            raise ConfigError(f"nvImageCodec {what} option {entry!r}: expected <codec>:<option>=<value>")
        if (codec, option) not in known:
            names = ", ".join(f"{c}:{o}" for c, o in sorted(known))
            raise ConfigError(f"unknown nvImageCodec {what} option {codec}:{option} (known: {names})")
        allowed = known[(codec, option)]
        if (allowed is None and not value.isdigit()) or (allowed is not None and value not in allowed):
            raise ConfigError(f"nvImageCodec {what} option {codec}:{option}={value!r}: expected "
                              f"{'an integer' if allowed is None else ' or '.join(allowed)}")
    return options
