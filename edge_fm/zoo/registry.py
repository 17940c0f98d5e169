"""The architecture registry: ``register_model``, ``create_model``, ``list_models`` (after timm)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any

from edge_fm.errors import EdgeFMError, unknown_choice


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows of an architecture before it is built.

    Attributes:
        name: Registry name, e.g. ``"cnn-2conv"``.
        builder: Function of typed keyword options that returns an uncompiled Keras model.
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
            p.name: p.default for p in inspect.signature(self.builder).parameters.values() if p.kind == p.KEYWORD_ONLY
        }


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, paper: str = "", paper_accuracy: float | None = None, description: str = "", testing: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers an architecture builder under ``name``.

    The builder takes keyword-only options and returns an uncompiled model whose input is a raw
    ``(28, 28, 1)`` image with values 0-255.

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
        A new, uncompiled ``keras.Model`` taking raw 28x28x1 images (0-255).

    Raises:
        EdgeFMError: Unknown name or option, or an option value the builder rejects.

    Example:
        >>> model = create_model("cnn-2conv")  # doctest: +SKIP
    """
    check_options(name, options)
    return get_spec(name).builder(**options)


def check_options(name: str, options: dict[str, Any]) -> None:
    """Checks that ``options`` are keyword options of architecture ``name``, before any work.

    Raises:
        EdgeFMError: Unknown architecture or option (with a close match).
    """
    known = get_spec(name).options()
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise EdgeFMError(
                f"architecture {name!r} has no option {key!r}.{hint} Options: {', '.join(known) or 'none'}."
            )
