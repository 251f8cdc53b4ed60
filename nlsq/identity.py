"""Identity of a model function, for sharing compiled programs between calls.

Two callables get the same key exactly when compiling either would give the same
program: the same code, the same captured values (closure cells, defaults, bound
arguments of ``functools.partial``) and the same values of the module-level names
the code reads. So a fresh ``lambda`` with unchanged code and captures hits the
cache, while closures over different constants, or a function redefined after a
global constant changed, do not.

Values are fingerprinted by content when they are numbers, strings, arrays or
containers of those; any other object (an instance, a client, an open file) by its
identity. A program stored under a key keeps the first model alive, so an identity
that appears in a key cannot be reused by another object while the entry exists.

A function's key is remembered with the reads it came from (its code, defaults,
closure cells, the globals and module attributes it names, recursively): while each
read still gives the same object, the key is reused without hashing again. A model
that reads a mutable value (an array, a list, an instance's attributes) is hashed on
every call, since such a value can change in place.
"""

from __future__ import annotations

import functools
import types
import warnings
import weakref
from typing import Any

import numpy as np
import xxhash

_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)
_MAX_DEPTH = 8
#: What a read gives when the name or cell is absent.
_ABSENT = object()


@functools.lru_cache(maxsize=4096)
def _code_digest(code: types.CodeType) -> bytes:
    """Digest of a code object, nested code objects (lambdas, comprehensions) included."""
    h = xxhash.xxh3_128()
    for part in (
        code.co_code,
        repr(code.co_names).encode(),
        repr(code.co_varnames).encode(),
        repr(code.co_freevars).encode(),
        repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode(),
    ):
        h.update(part)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(_code_digest(const))
        else:
            h.update(f"{type(const).__name__}:{const!r}".encode())
    return h.digest()


class _Fingerprint:
    """Feeds a structural description of values into one hash."""

    def __init__(self) -> None:
        self.hash = xxhash.xxh3_128()
        self._visiting: set[int] = set()
        #: ``(source, name, value)`` of every namespace read: a dict's entry, or an
        #: attribute when ``name`` is a :class:`_Attribute`.
        self.reads: list[tuple[Any, Any, Any]] = []
        #: False once a value was hashed by content that can change in place.
        self.stable = True

    def tag(self, text: str) -> None:
        self.hash.update(text.encode())
        self.hash.update(b"\x00")

    def value(self, obj: Any, depth: int = 0) -> None:
        if depth > _MAX_DEPTH or id(obj) in self._visiting:
            self.tag(f"id:{id(obj)}")
            return
        if isinstance(obj, _SCALARS):
            self.tag(f"{type(obj).__name__}:{obj!r}")
        elif isinstance(obj, np.ndarray) or _is_jax_array(obj):
            self.stable = False
            array = np.asarray(obj)
            self.tag(f"array:{array.dtype}:{array.shape}")
            self.hash.update(np.ascontiguousarray(array).tobytes())
        elif isinstance(obj, tuple | list):
            self.stable = self.stable and isinstance(obj, tuple)
            self.tag(f"{type(obj).__name__}:{len(obj)}")
            self._visit(obj, lambda: [self.value(item, depth + 1) for item in obj])
        elif isinstance(obj, dict):
            self.stable = False
            self.tag(f"dict:{len(obj)}")
            items = sorted(obj.items(), key=lambda item: repr(item[0]))
            self._visit(obj, lambda: [self.value(item, depth + 1) for item in items])
        elif isinstance(obj, types.ModuleType):
            self.tag(f"module:{obj.__name__}")
        elif isinstance(obj, type):
            self.tag(f"class:{obj.__module__}.{obj.__qualname__}")
        elif isinstance(obj, types.FunctionType):
            self._visit(obj, lambda: self.function(obj, depth))
        elif isinstance(obj, types.MethodType):
            self.stable = False
            self.tag("method")
            self.value(obj.__func__, depth + 1)
            self.value(obj.__self__, depth + 1)
        elif isinstance(obj, functools.partial):
            self.stable = False
            self.tag("partial")
            self.value(obj.func, depth + 1)
            self.value(obj.args, depth + 1)
            self.value(obj.keywords, depth + 1)
        elif isinstance(obj, types.BuiltinFunctionType | np.ufunc):
            self.tag(f"builtin:{getattr(obj, '__module__', '')}.{obj.__name__}")
        else:
            # Other objects (instances, jitted functions, ...) by identity, plus their
            # plain data attributes: a model method reads them as constants.
            self.tag(f"object:{type(obj).__module__}.{type(obj).__qualname__}:{id(obj)}")
            attributes = _instance_attributes(obj)
            self.attribute_reads(obj, attributes)
            self._visit(obj, lambda: self.data_attributes(attributes, depth))

    def _visit(self, obj: Any, feed) -> None:
        self._visiting.add(id(obj))
        try:
            feed()
        finally:
            self._visiting.discard(id(obj))

    def function(self, fn: types.FunctionType, depth: int) -> None:
        code = fn.__code__
        for name in _FUNCTION_ATTRIBUTES:
            self.reads.append((fn, name, getattr(fn, name)))
        self.tag(f"function:{fn.__module__}.{fn.__qualname__}")
        self.hash.update(_code_digest(code))
        self.value(fn.__defaults__, depth + 1)
        self.value(fn.__kwdefaults__, depth + 1)
        names = _global_names(code)
        referenced = []
        for cell in fn.__closure__ or ():
            contents = _cell_contents(cell)
            self.reads.append((cell, _CELL, contents))
            contents = None if contents is _ABSENT else contents
            self.value(contents, depth + 1)
            referenced.append(contents)
        # Module-level names the code reads are baked into the traced program.
        for name in names:
            value = fn.__globals__.get(name, _ABSENT)
            self.reads.append((fn.__globals__, name, value))
            if value is not _ABSENT:
                self.tag(f"global:{name}")
                self.value(value, depth + 1)
                referenced.append(value)
        # So are data attributes it reads from modules it refers to (``settings.K``).
        for value in referenced:
            if isinstance(value, types.ModuleType):
                attributes = _module_attributes(value, names)
                self.module_reads(value, names, attributes)
                self.data_attributes(attributes, depth)
                self.function_attributes(attributes)

    def module_reads(
        self, module: types.ModuleType, names: tuple[str, ...], attributes: dict[str, Any]
    ) -> None:
        """Record the module attributes read; one provided other than by the module's
        namespace (a module ``__getattr__``) cannot be checked by a read."""
        namespace = vars(module)
        for name in names:
            value = namespace.get(name, _ABSENT)
            if attributes.get(name, _ABSENT) is not value:
                self.stable = False
            self.reads.append((namespace, name, value))

    def attribute_reads(self, obj: Any, attributes: dict[str, Any]) -> None:
        """Record an object's data attributes (and how many attributes it has, since a
        new one may be data); one that can change in place cannot be checked by a read."""
        namespace = vars(obj) if hasattr(obj, "__dict__") else {}
        self.reads.append((namespace, _SIZE, len(namespace)))
        for name, value in attributes.items():
            if _is_data(value):
                self.stable = self.stable and isinstance(value, _SCALARS)
                self.reads.append((namespace, name, value))

    def function_attributes(self, attributes: dict[str, Any]) -> None:
        """Fingerprint the code of module functions the model calls (``helpers.g``), so
        that an edited and reloaded helper is another model; what those functions call
        in turn is not followed (it would walk through whole libraries)."""
        for name in sorted(attributes):
            value = attributes[name]
            if isinstance(value, types.FunctionType):
                self.tag(f"module function:{name}:{value.__qualname__}")
                self.hash.update(_code_digest(value.__code__))
                self.reads.append((value, "__code__", value.__code__))

    def data_attributes(self, attributes: dict[str, Any], depth: int) -> None:
        """Fingerprint the attributes that hold data (numbers, strings, arrays)."""
        for name in sorted(attributes):
            value = attributes[name]
            if _is_data(value):
                self.tag(f"attribute:{name}")
                self.value(value, depth + 1)


def _instance_attributes(obj: Any) -> dict[str, Any]:
    """An object's own attributes, less the dunder ones (a wrapper's ``__name__``,
    ``__doc__``, ``__annotations__``): what a model method reads as constants."""
    attributes = vars(obj) if hasattr(obj, "__dict__") else {}
    return {
        name: value
        for name, value in attributes.items()
        if not (name.startswith("__") and name.endswith("__"))
    }


#: Function attributes that can be rebound (``__closure__`` cannot; its cells can).
_FUNCTION_ATTRIBUTES = ("__code__", "__defaults__", "__kwdefaults__")


class _Marker:
    """Marks a read that is not a name: a closure cell's contents, a namespace's size."""


_CELL = _Marker()
_SIZE = _Marker()


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _ABSENT


def _read_holds(source: Any, name: Any, value: Any) -> bool:
    """Whether a recorded read still gives the same object (the same size)."""
    if name is _CELL:
        return _cell_contents(source) is value
    if name is _SIZE:
        return len(source) == value
    if isinstance(source, dict):
        return source.get(name, _ABSENT) is value
    return getattr(source, name, _ABSENT) is value


def _reads_hold(reads: tuple) -> bool:
    return all(_read_holds(source, name, value) for source, name, value in reads)


#: A function's key with the reads it came from, for as long as the function lives.
_remembered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _module_attributes(module: types.ModuleType, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes of ``module`` named in ``names``.

    Warnings are silenced because looking a name up may warn (NumPy warns for ``np.str``
    when a model also uses the builtin ``str``), and a fingerprint must never fail.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: getattr(module, name) for name in names if hasattr(module, name)}


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _is_data(obj: Any) -> bool:
    """Numbers, strings, arrays and tuples/lists/dicts of those (one level)."""
    if isinstance(obj, (*_SCALARS, np.ndarray)) or _is_jax_array(obj):
        return True
    if isinstance(obj, tuple | list):
        return all(isinstance(item, _SCALARS) for item in obj)
    if isinstance(obj, dict):
        return all(isinstance(item, _SCALARS) for item in obj.values())
    return False


def _is_jax_array(obj: Any) -> bool:
    return type(obj).__module__.startswith("jax") and hasattr(obj, "__array__")


def model_key(model: Any) -> str:
    """A key equal for models that compile to the same program (see module docstring).

    Parameters
    ----------
    model : callable
        A function, lambda, closure, ``functools.partial``, bound method or callable
        object.

    Returns
    -------
    str
        Hex digest of the model's code, captured values and read globals.
    """
    function = isinstance(model, types.FunctionType)
    if function:
        remembered = _remembered.get(model)
        if remembered is not None and _reads_hold(remembered[0]):
            return remembered[1]
    fingerprint = _Fingerprint()
    fingerprint.value(model)
    key = fingerprint.hash.hexdigest()
    if function and fingerprint.stable:
        _remembered[model] = (tuple(fingerprint.reads), key)
    return key
