"""numba kernels typed once, and the registry that loads them.

`@kernel` compiles a plain function with numba (nopython mode, cached on disk) and keeps the
function's own type, so mypy checks every call against the one signature written in its
`def`. The array aliases below carry the numba type they are compiled for, so the same
annotations tell `compile_all` what to compile every registered kernel for: the types of the
real calls, with no second list to keep.
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import numba
import numpy as np
import numpy.typing as npt

# The arrays kernels take, each with the numba type it is compiled for (C-contiguous, writeable).
FloatArray = Annotated[npt.NDArray[np.float64], numba.float64[::1]]
IntArray = Annotated[npt.NDArray[np.int64], numba.int64[::1]]
BoolArray = Annotated[npt.NDArray[np.bool_], numba.boolean[::1]]
ByteArray = Annotated[npt.NDArray[np.uint8], numba.uint8[::1]]
ReadBytes = Annotated[npt.NDArray[np.uint8], numba.types.Array(numba.uint8, 1, "C", readonly=True)]  # np.frombuffer of bytes
FloatMatrix = Annotated[npt.NDArray[np.float64], numba.float64[:, ::1]]
IntMatrix = Annotated[npt.NDArray[np.int64], numba.int64[:, ::1]]

P = ParamSpec("P")
R = TypeVar("R")
KERNELS: list[Any] = []  # every kernel's numba dispatcher, in the order they were defined


def kernel(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` compiled by numba (nopython, cached on disk), typed as `fn`, and registered for `compile_all`."""
    compiled: Callable[P, R] = numba.njit(cache=True)(fn)
    KERNELS.append(compiled)
    return compiled


def helper(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` compiled by numba (nopython, cached on disk), typed as `fn`, for kernels to call: compiled with each
    kernel that calls it, for the types that kernel passes, and not registered (it is never called from Python, so
    it has no one signature of its own)."""
    compiled: Callable[P, R] = numba.njit(cache=True)(fn)
    return compiled


def inline_helper(fn: Callable[P, R]) -> Callable[P, R]:
    """`helper`, but compiled into each caller's own code (numba's inline="always"): for a small one called once per
    field of a message, where a call would cost about as much as its work (`wire_read._next_field`: as a call, a SPaT
    frame's read took 20% longer)."""
    compiled: Callable[P, R] = numba.njit(cache=True, inline="always")(fn)
    return compiled


def fingerprint(parts: tuple[object, ...]) -> str:
    """A hash of what a file's kernels compile in from other files: the source of each numba function, the value of
    each constant. numba's disk cache knows only a kernel's own file, so a change to a helper or constant it compiled
    in from elsewhere would leave the cached machine code as it was. Such a file writes this hash down as
    COMPILED_IN beside COMPILED_FROM, the parts, and tests/test_traffic.py checks that they agree: a change elsewhere
    then fails that test until the file's hash is written anew, which changes the file and compiles its kernels again."""
    h = hashlib.sha256()
    for part in parts:
        py = getattr(part, "py_func", None)
        h.update((inspect.getsource(py) if py is not None else repr(part)).encode())
    return h.hexdigest()[:16]


def _numba_type(annotation: object) -> Any:
    """The numba type a kernel's parameter annotated `annotation` is compiled for."""
    if typing.get_origin(annotation) is Annotated:
        return typing.get_args(annotation)[1]
    if annotation is float:
        return numba.float64
    if annotation is int:
        return numba.int64
    raise TypeError(f"no numba type for a kernel parameter annotated {annotation!r}")


def compile_all() -> int:
    """Load every registered kernel from numba's on-disk cache, or compile it if the cache has none, for the
    types its parameters' annotations give. Returns how many kernels numba compiled (the cache had none for them)."""
    compiled = 0
    for k in KERNELS:
        fn = k.py_func
        hints = typing.get_type_hints(fn, include_extras=True)
        misses = sum(k.stats.cache_misses.values())
        k.compile(tuple(_numba_type(hints[name]) for name in fn.__code__.co_varnames[: fn.__code__.co_argcount]))
        compiled += sum(k.stats.cache_misses.values()) > misses
    return compiled
