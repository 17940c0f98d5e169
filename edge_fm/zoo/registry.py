"""The architecture registry: ``register_model``, ``create_model``, ``list_models`` (after timm)."""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import inspect
import json
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any

from edge_fm.errors import EdgeFMError, unknown_choice


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows of an architecture before it is built.

    Attributes:
        name: Registry name, e.g. ``"cnn-2conv"``.
        builder: Function of typed keyword options (or a ``functools.partial`` presetting some) that
            returns an uncompiled Keras model.
        paper: The report the architecture reproduces (a file in ``shared/papers``), or ``""``.
        paper_accuracy: Test accuracy the paper reports, as a fraction, or ``None``.
        description: One line for tables.
        testing: True for tiny architectures that exist to keep tests fast.
    """

    name: str
    builder: Callable[..., Any]
    paper: str
    paper_accuracy: float | None
    description: str
    testing: bool = False

    def options(self) -> dict[str, Any]:
        """The builder's keyword options and their defaults."""
        return {
            p.name: p.default
            for p in inspect.signature(self.builder).parameters.values()
            if p.kind == p.KEYWORD_ONLY
        }

    def option_types(self) -> dict[str, Any]:
        """The builder's keyword options and their annotated types."""
        # A functools.partial carries no annotations of its own: they are its function's.
        builder = self.builder.func if isinstance(self.builder, functools.partial) else self.builder
        hints = typing.get_type_hints(builder)
        return {name: hints[name] for name in self.options() if name in hints}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    paper: str = "",
    paper_accuracy: float | None = None,
    description: str = "",
    testing: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers an architecture builder under ``name``.

    The builder (a function, or a ``functools.partial`` of one that presets its options) takes
    keyword-only options and returns an uncompiled model whose input is a raw image with values
    0-255. Every builder takes two options documented here rather than in each builder:
    ``input_shape``, the ``(height, width, channels)`` of the data (Fashion-MNIST's ``(28, 28, 1)``
    by default), and ``num_classes``, the classes of the output.

    Example:
        >>> @register_model("my-net", description="a tiny net")  # doctest: +SKIP
        ... def my_net(*, width: int = 8): ...
    """

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, paper, paper_accuracy, description, testing)
        return builder

    return decorate


def get_spec(name: str) -> ModelSpec:
    """Returns the :class:`ModelSpec` of ``name``.

    Raises:
        EdgeFMError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("architecture", name, _REGISTRY) from None


def list_models(include_testing: bool = False) -> list[str]:
    """Names of the registered architectures, sorted; testing-only ones on request."""
    return sorted(n for n, s in _REGISTRY.items() if include_testing or not s.testing)


def create_model(name: str, **options: Any):
    """Builds the architecture ``name`` with the given options.

    Args:
        name: A registered name (see :func:`list_models`).
        **options: The builder's keyword options.

    Returns:
        A new, uncompiled ``keras.Model`` taking raw images (0-255), 28x28x1 unless ``input_shape`` says.

    Raises:
        EdgeFMError: Unknown name or option, or an option value the builder rejects.

    Example:
        >>> model = create_model("cnn-2conv")  # doctest: +SKIP
    """
    check_options(name, options)
    try:
        model = get_spec(name).builder(**options)
    except (ValueError, TypeError) as exc:
        if not options:
            raise  # the defaults failing is a bug, not a user's mistake
        reason = _build_failure(exc)
        raise EdgeFMError(
            f"architecture {name!r} cannot be built with {_as_text(options)} ({reason}); choose other values."
        ) from None
    if options:
        _check_layer_sizes(name, model, options)
    return model


def check_options(name: str, options: dict[str, Any]) -> None:
    """Checks that ``options`` are keyword options of architecture ``name``, before any work.

    Raises:
        EdgeFMError: Unknown architecture or option (with a close match).
    """
    spec = get_spec(name)
    known = spec.options()
    types_ = spec.option_types()
    for key, value in options.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise EdgeFMError(
                f"architecture {name!r} has no option {key!r}.{hint} Options: {', '.join(known) or 'none'}."
            )
        if key in types_ and not _matches(value, types_[key]):
            raise EdgeFMError(
                f"architecture {name!r} option {key} must be {_describe(types_[key])}, got {json.dumps(value)} "
                f"(default: {json.dumps(known[key])})."
            )


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-parsed option value fits a builder's annotation (lists stand for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(_matches(item, arg) for item, arg in zip(value, args))
    if origin is collections.abc.Sequence:
        return isinstance(value, (list, tuple)) and all(_matches(item, args[0]) for item in value)
    return True  # an annotation this check does not know: the builder judges


def _describe(hint: Any, nested: bool = False) -> str:
    """An annotation as users write the value: ``a list like [int, int]``, ``a string or null``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg, nested) for arg in args)
    if origin in (tuple, collections.abc.Sequence):
        items = args if origin is tuple else (args[0], Ellipsis)
        inner = ", ".join("..." if arg is Ellipsis else _describe(arg, nested=True) for arg in items)
        return f"[{inner}]" if nested else f"a list like [{inner}]"
    words = {
        int: ("int", "a whole number"),
        float: ("number", "a number"),
        bool: ("true/false", "true or false"),
        str: ("string", "a string"),
        type(None): ("null", "null"),
    }
    short, long = words.get(hint, (str(hint), str(hint)))
    return short if nested else long


def _build_failure(exc: Exception) -> str:
    # Keras wraps a layer's error as 'Exception encountered when calling layer "x"', then the
    # reason, then the graph node; keep the layer and the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Exception encountered when calling layer") and len(lines) > 1:
        layer = lines[0].split('"')[1] if lines[0].count('"') >= 2 else "a layer"
        return f"layer {layer}: {lines[1].split(' for ')[0]}"[:300]
    return lines[0][:300]


def _as_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in options.items())


def _check_layer_sizes(name: str, model: Any, options: dict[str, Any]) -> None:
    # A width of 0 builds (Keras accepts Dense(0)) but aborts the process inside oneDNN on the
    # first step, after the run directory was made; refuse it while nothing exists yet.
    for layer in _leaves(model):
        shapes = layer.output_shape if isinstance(layer.output_shape, list) else [layer.output_shape]
        for shape in shapes:
            if isinstance(shape, tuple) and any(dim == 0 for dim in shape[1:]):
                raise EdgeFMError(
                    f"architecture {name!r} with {_as_text(options)} has a layer of size 0 ({layer.name}, output "
                    f"{tuple(shape[1:])}): use widths of at least 1."
                )


def _leaves(model: Any):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaves(layer)
        else:
            yield layer
