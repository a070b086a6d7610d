"""A strict stand-in for CuPy: NumPy does the maths, but only CuPy's names and keywords exist, and what a GPU
would refuse or do behind the code's back raises ``StrictCupyError``.

Run the array executor with ``xp = strict_cupy.module()`` to find, without a GPU, what would break or stall
on CuPy: a NumPy-only function or keyword (taken from the installed CuPy's own names and signatures), a host
``numpy.ndarray`` mixed into a device operation, an implicit device-to-host transfer (``np.asarray(x)`` /
``__array__``, ``float(x)``, ``int(x)``, ``bool(x)``, any NumPy function or ufunc called on a device array),
and ``ufunc.at`` / ``ufunc.reduceat`` (scatter paths that CuPy has only for a few ufuncs and dtypes; not allowed
in array code). Explicit transfers are allowed, as on CuPy: ``xp.asarray(host)``, ``x.get()``,
``xp.asnumpy(x)``, ``x.item()``, ``x.tolist()``.

Needs CuPy installed (its names and signatures are the reference; no device is used). Tests:
tests/unit/arrays/test_arrays_strict_cupy.py.
"""

from __future__ import annotations

import functools
import inspect
import operator
import types
from collections.abc import Callable
from typing import Any

import numpy as np

HOST_OK = frozenset({"asarray", "array", "asanyarray"})  # uploads: a host array is what they take
UFUNC_KEYWORDS = frozenset({"out", "dtype", "casting"})  # CuPy's ufunc call takes these (no ``where``)
REFUSED_UFUNC_METHODS = frozenset({"at", "reduceat"})
EXPLICIT = frozenset({"get", "item", "tolist", "set"})  # the transfers CuPy code spells out


class StrictCupyError(TypeError):
    """What CuPy would refuse, or an implicit host transfer."""


@functools.cache
def _cupy() -> Any:
    import cupy  # names and signatures only: importing CuPy needs no device

    return cupy


def _text_signature(obj: Any) -> inspect.Signature | None:
    """The signature of a CuPy function, or of a Cython method from its docstring's first line."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    first = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    if not first or "(" not in first[0]:
        return None
    params = first[0][first[0].index("(") : first[0].rindex(")") + 1]
    scope: dict[str, Any] = {}
    try:
        exec(f"def _f{params}: pass", {}, scope)  # the installed CuPy's own docstring: test code only
    except SyntaxError:
        return None
    return inspect.signature(scope["_f"])


def _bind(sig: inspect.Signature | None, where: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise StrictCupyError(f"{where}: {exc} (CuPy's signature is {sig})") from None


def _unwrap(value: Any, host_ok: bool, where: str) -> Any:
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, np.ndarray):
        if not host_ok:
            raise StrictCupyError(f"{where}: a host numpy.ndarray {value.shape} in a device operation "
                                  "(upload it with xp.asarray first)")
        return value
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v, host_ok, where) for v in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))  # CuPy returns 0-d arrays, not scalars
    if isinstance(value, tuple | list):
        return type(value)(_wrap(v) for v in value)
    return value


def _call(where: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          host_ok: bool = False) -> Any:
    a = _unwrap(args, host_ok, where)
    k = {key: _unwrap(v, host_ok, where) for key, v in kwargs.items()}
    return _wrap(fn(*a, **k))


@functools.cache
def _ndarray_names() -> frozenset[str]:
    return frozenset(dir(_cupy().ndarray))


@functools.cache
def _method_signature(name: str) -> inspect.Signature | None:
    return _text_signature(getattr(_cupy().ndarray, name))


def _binary(name: str) -> Callable[[DeviceArray, Any], Any]:
    op = getattr(operator, name)

    def method(self: DeviceArray, other: Any) -> Any:
        return _wrap(op(self._a, _unwrap(other, False, f"ndarray.__{name}__")))

    return method


def _reflected(name: str) -> Callable[[DeviceArray, Any], Any]:
    op = getattr(operator, name)

    def method(self: DeviceArray, other: Any) -> Any:
        return _wrap(op(_unwrap(other, False, f"ndarray.__r{name}__"), self._a))

    return method


def _inplace(name: str) -> Callable[[DeviceArray, Any], Any]:
    op = getattr(operator, f"i{name.rstrip('_')}")

    def method(self: DeviceArray, other: Any) -> DeviceArray:
        self._a = op(self._a, _unwrap(other, False, f"ndarray.__i{name.rstrip('_')}__"))
        return self

    return method


def _refuse(what: str) -> Callable[..., Any]:
    def method(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
        raise StrictCupyError(f"{what} of a device array: an implicit device-to-host transfer "
                              "(spell it out: x.get(), xp.asnumpy(x) or x.item())")

    return method


class DeviceArray:
    """A "device" array: NumPy inside, CuPy's ndarray interface outside."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # numpy.add(x, ...) and the like on a device array: TypeError
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        raise StrictCupyError(f"numpy.{func.__name__} called on a device array (use xp.{func.__name__})")

    __array__ = _refuse("numpy.asarray / __array__")
    __float__ = _refuse("float()")
    __int__ = _refuse("int()")
    __index__ = _refuse("operator.index()")
    __complex__ = _refuse("complex()")
    __bool__ = _refuse("bool()")

    @property
    def T(self) -> DeviceArray:
        return DeviceArray(self._a.T)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(v) for v in self._a)

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self._a.shape}, dtype={self._a.dtype})"

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key, False, "ndarray.__getitem__")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key, False, "ndarray.__setitem__")] = _unwrap(value, False, "ndarray.__setitem__")

    def __neg__(self) -> DeviceArray:
        return DeviceArray(-self._a)

    def __pos__(self) -> DeviceArray:
        return DeviceArray(+self._a)

    def __abs__(self) -> DeviceArray:
        return DeviceArray(abs(self._a))

    def __invert__(self) -> DeviceArray:
        return DeviceArray(~self._a)

    # The explicit transfers and uploads of cupy.ndarray.
    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        if out is not None:
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order)  # type: ignore[call-overload,no-any-return]

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        self._a[...] = arr

    def item(self) -> Any:
        return self._a.item()

    def tolist(self) -> Any:
        return self._a.tolist()

    def __getattr__(self, name: str) -> Any:
        if name not in _ndarray_names() or not hasattr(np.ndarray, name):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r} (the strict stand-in has CuPy's only)")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        sig = _method_signature(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            _bind(sig, f"cupy.ndarray.{name}", (self, *args), kwargs)
            return _call(f"cupy.ndarray.{name}", attr, args, kwargs)

        return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and_", "or_", "xor", "lshift", "rshift",
              "matmul"):
    _dunder = _name.rstrip("_")
    setattr(DeviceArray, f"__{_dunder}__", _binary(_name))
    setattr(DeviceArray, f"__r{_dunder}__", _reflected(_name))
    setattr(DeviceArray, f"__i{_dunder}__", _inplace(_name))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(DeviceArray, f"__{_name}__", _binary(_name))
for _name in ("shape", "dtype", "ndim", "size", "nbytes", "itemsize", "strides", "flags"):  # plain attributes
    setattr(DeviceArray, _name, property(lambda self, n=_name: getattr(self._a, n)))


class Ufunc:
    """A CuPy ufunc: ``__call__``, ``reduce``, ``accumulate``, ``outer``; no ``at`` / ``reduceat``."""

    def __init__(self, name: str) -> None:
        self.name, self._np = name, getattr(np, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        extra = set(kwargs) - UFUNC_KEYWORDS
        if extra:
            raise StrictCupyError(f"cupy.{self.name}: CuPy's ufuncs take no {', '.join(sorted(extra))} "
                                  f"(only {', '.join(sorted(UFUNC_KEYWORDS))})")
        return _call(f"cupy.{self.name}", self._np, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in REFUSED_UFUNC_METHODS:
            raise StrictCupyError(f"cupy.{self.name}.{name}: not allowed in array code (scatter path)")
        if not hasattr(getattr(_cupy(), self.name), name):
            raise AttributeError(f"cupy.{self.name} has no attribute {name!r}")
        attr = getattr(self._np, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: _call(f"cupy.{self.name}.{name}", attr, args, kwargs)


class _Stream:
    ptr = 0

    def synchronize(self) -> None:
        pass

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class StrictCupy(types.ModuleType):
    """The module: CuPy's names that NumPy also has (NumPy's maths behind CuPy's signatures)."""

    ndarray = DeviceArray

    def __init__(self) -> None:
        super().__init__("strict_cupy")  # not "cupy": GpuBackend would look for a device
        self.cuda = types.SimpleNamespace(Stream=lambda non_blocking=False: _Stream(),
                                          get_current_stream=_Stream, runtime=types.SimpleNamespace())

    def asnumpy(self, a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> Any:
        return a.get(out=out) if isinstance(a, DeviceArray) else np.asarray(a)

    def get_array_module(self, *args: Any) -> StrictCupy:
        return self

    def __getattr__(self, name: str) -> Any:
        cp = _cupy()
        if name.startswith("__") or not hasattr(cp, name):
            raise AttributeError(f"cupy has no attribute {name!r} (the strict stand-in has CuPy's names only)")
        if not hasattr(np, name):
            raise AttributeError(f"cupy.{name} is not in the strict stand-in (CuPy-only; NumPy cannot do it)")
        real, mine = getattr(cp, name), getattr(np, name)
        if isinstance(real, cp.ufunc):
            found: Any = Ufunc(name)
        elif isinstance(mine, type) or not callable(mine):
            found = mine  # dtypes (CuPy's are NumPy's), constants
        else:
            sig = _text_signature(real)
            host_ok = name in HOST_OK

            def fn(*args: Any, **kwargs: Any) -> Any:
                _bind(sig, f"cupy.{name}", args, kwargs)
                return _call(f"cupy.{name}", mine, args, kwargs, host_ok)

            fn.__name__ = name
            found = fn
        setattr(self, name, found)
        return found


@functools.cache
def module() -> StrictCupy:
    """The stand-in (one per process: it caches CuPy's names as it goes)."""
    return StrictCupy()
