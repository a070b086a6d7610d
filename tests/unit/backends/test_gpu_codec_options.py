"""nvImageCodec options strings are checked by us before they reach a Decoder or Encoder (nvImageCodec ignores
unknown entries, so a misspelt one would be a silent no-op). The real library's CPU-only mode is driven in
tests/unit/backends/test_gpu_nvimgcodec_cpu.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from imgworker.backends.gpu import codec_options, detect
from imgworker.backends.gpu.decode import DecoderLayout
from imgworker.core.config import ConfigError


def test_the_layouts_options_are_known() -> None:
    opts = DecoderLayout(decoders=2, batch_single=True).options()
    assert codec_options.checked(opts, codec_options.DECODER_OPTIONS) == opts


@pytest.mark.parametrize(("options", "message"), [
    ("nvjpeg_hw_decoder:force_batch_singel=1", "unknown nvImageCodec decoder option nvjpeg_hw_decoder:force_batch_s"),
    ("nvjpeg_hw_decoders:force_batch_single=1", "unknown nvImageCodec decoder option nvjpeg_hw_decoders:"),
    ("nvjpeg_hw_decoder:force_batch_single=yes", "expected 0 or 1"),
    (":num_cuda_streams=four", "expected an integer"),
    ("force_batch_single=1", "expected <codec>:<option>=<value>"),
    ("nvjpeg_hw_decoder:force_batch_single", "expected <codec>:<option>=<value>"),
])
def test_a_misspelt_or_malformed_decoder_option_is_refused(options: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        codec_options.checked(options, codec_options.DECODER_OPTIONS)


def test_gpu_decoder_refuses_before_nvimgcodec_sees_the_string() -> None:
    seen: list[dict[str, Any]] = []
    kinds = SimpleNamespace(HW_GPU_ONLY=1, HYBRID_CPU_GPU=2, GPU_ONLY=3)
    mod = SimpleNamespace(BackendKind=kinds, Backend=lambda k: k, Decoder=lambda **kw: seen.append(kw))
    detect.gpu_decoder(mod, 2, "nvjpeg_hw_decoder:force_batch_single=1")
    assert seen[-1]["options"] == "nvjpeg_hw_decoder:force_batch_single=1"
    with pytest.raises(ConfigError):
        detect.gpu_decoder(mod, 2, "nvjpeg_hw_decoder:force_batch=1")
    assert len(seen) == 1  # the bad string never reached the library
