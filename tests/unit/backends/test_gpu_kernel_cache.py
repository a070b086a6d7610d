"""kernels.py's band-weight cache across CUDA streams, on a model of CuPy's stream ordering (no GPU).

The model keeps, for every device array, the stream and position of the copy that wrote it; a kernel launched
on a stream may read it only if the copy was queued earlier on the same stream, or if that stream waited on an
event recorded on the writer's stream after the copy. That is CUDA's rule for non-blocking streams, and the
hazard of issue 27: slot 1 of a batch (stream B) found slot 0's weights (uploaded on stream A, asynchronously)
in the shared cache and launched without waiting.
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from imgworker.backends.gpu import kernels


class Stream:
    def __init__(self, model: Model, name: str) -> None:
        self.model, self.name, self.ops = model, name, 0
        self.waited: list[tuple[Stream, int]] = []  # (stream, op count when its event was recorded)

    def wait_event(self, event: Event) -> None:
        assert event.stream is not None, "waiting on an event that was never recorded"
        self.waited.append((event.stream, event.at))

    def __enter__(self) -> Stream:
        self.model.stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.stack.pop()


class Event:
    def __init__(self, disable_timing: bool = False) -> None:
        self.stream: Stream | None = None
        self.at = -1

    def record(self, stream: Stream | None = None) -> None:
        self.stream = stream
        self.at = stream.ops if stream is not None else -1


class DeviceArray:
    """A device array: its host value, and the stream + position of the copy that wrote it."""

    def __init__(self, value: np.ndarray, stream: Stream) -> None:
        self.value, self.stream = value, stream
        stream.ops += 1
        self.at = stream.ops

    def visible_on(self, stream: Stream) -> bool:
        if stream is self.stream:
            return True
        return any(s is self.stream and at >= self.at for s, at in stream.waited)


class Model:
    """Enough of CuPy for kernels._rows / _cols: streams, events, async uploads, kernel launches."""

    def __init__(self) -> None:
        self.null = Stream(self, "null")
        self.stack: list[Stream] = []
        self.launches: list[tuple[str, bool]] = []  # (stream, the weights were visible there)
        self.syncs = 0
        self.on_sync: list[Any] = []
        runtime = SimpleNamespace(deviceSynchronize=self._sync)
        self.cuda = SimpleNamespace(get_current_stream=self.current, Event=Event, runtime=runtime,
                                    Device=lambda: SimpleNamespace(id=0))
        self.int32, self.float32, self.uint8, self.dtype = np.int32, np.float32, np.uint8, np.dtype

    def _sync(self) -> None:
        self.syncs += 1
        for f in self.on_sync:
            f()

    def current(self) -> Stream:
        return self.stack[-1] if self.stack else self.null

    def stream(self, name: str) -> Stream:
        return Stream(self, name)

    def asarray(self, host: np.ndarray) -> DeviceArray:
        return DeviceArray(np.asarray(host), self.current())

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def launch(self, name: str) -> Any:
        def fn(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
            stream = self.current()
            starts, weights = args[2], args[3]
            self.launches.append((stream.name, starts.visible_on(stream) and weights.visible_on(stream)))

        return fn


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Model:
    m = Model()
    fake_module = SimpleNamespace(get_function=m.launch)
    monkeypatch.setattr(kernels, "_module", fake_module)
    monkeypatch.setattr(kernels, "_bands", type(kernels._bands)())
    return m


@pytest.mark.parametrize("pass_", [kernels._rows, kernels._cols])
def test_a_slot_on_another_stream_waits_for_the_weights_another_slot_uploaded(model: Model, pass_: Any) -> None:
    src = np.zeros((300, 400, 3), dtype=np.uint8)
    a, b = model.stream("A"), model.stream("B")
    with a:
        pass_(model, src, 64, "lanczos3", np.uint8)  # slot 0: uploads the weights on A, puts them in the cache
    with b:
        pass_(model, src, 64, "lanczos3", np.uint8)  # slot 1: a cache hit, launched on B
    assert model.launches == [("A", True), ("B", True)], "stream B launched before A's weight upload landed"
    assert len(kernels._bands) == 1  # one upload, shared: the fix keeps the cache


def test_an_evicted_entry_is_released_only_after_the_device_is_idle(
        model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_BANDS_MAX", 2)
    with model.stream("A"):
        first = kernels.device_band(model, 100, 10, "lanczos3")
        kernels.device_band(model, 100, 20, "lanczos3")
    ref = weakref.ref(first.weights)
    del first
    alive_at_sync: list[bool] = []
    model.on_sync.append(lambda: alive_at_sync.append(ref() is not None))
    with model.stream("B"):
        kernels.device_band(model, 100, 30, "lanczos3")  # evicts (100, 10)
    assert alive_at_sync == [True], "the evicted weights were freed before the device synchronised"
    assert ref() is None
    assert (0, 100, 10, "lanczos3") not in kernels._bands
