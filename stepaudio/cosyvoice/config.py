"""Reader for the CosyVoice recipe file ``cosyvoice.yaml`` (hyperpyyaml format) that never imports anything.

The official decoder folders ship a hyperpyyaml recipe whose values are tagged with Python object
constructors, e.g. ``!new:cosyvoice.flow.flow.MaskedDiffWithXvec``,
``!name:cosyvoice.matcha.audio.mel_spectrogram`` (``matcha.utils.audio.mel_spectrogram`` in the
CosyVoice recipes), ``!ref <sample_rate>`` or ``!apply:torch.manual_seed [1986]``.  The ``hyperpyyaml``
package would import and call every one of those names (``cosyvoice``/``matcha`` are not installed,
and running arbitrary constructors from a downloaded file is unsafe).  This module instead uses a
PyYAML ``SafeLoader`` subclass whose tag constructors turn each tagged value into a plain
:class:`ObjectSpec` (kind, dotted target, positional and keyword arguments).  ``!ref`` values are
resolved afterwards against the document, so a recipe is just data: the mapping from the class names
to the project's own modules happens in :mod:`stepaudio.cosyvoice.builder`.

Supported hyperpyyaml features: ``!new:``, ``!name:``, ``!apply:``, ``!applyref:``, ``!module:`` and
``!include:`` (all recorded, never imported or executed), ``!ref <key>`` / ``!ref <key[sub][sub]>``
(also inside strings and simple arithmetic such as ``!ref <a> * 2``), ``!copy <key>``, ``!tuple``,
``!PLACEHOLDER`` and YAML-1.2 style floats such as ``1e-06``.

Only :data:`INFERENCE_KEYS` (``flow``, ``hift``, ``feat_extractor``) are needed to decode; the other
entries of a full training recipe (``llm``, the data-pipeline functions, ``train_conf``, seed lines,
...) are resolved best-effort: a broken ``!ref`` there leaves that entry unresolved instead of failing.
"""

from __future__ import annotations

import ast
import copy
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CheckpointConfigError

__all__ = ["INFERENCE_KEYS", "ObjectSpec", "RefSpec", "load_recipe", "parse_recipe", "target_name"]

#: the top-level recipe entries the decoder is built from (what the original's ``CosyVoice`` class reads)
INFERENCE_KEYS = ("flow", "hift", "feat_extractor")


def target_name(target: str) -> str:
    """The final component of a dotted path: ``cosyvoice.matcha.audio.mel_spectrogram`` -> ``mel_spectrogram``."""
    return target.strip().rsplit(".", 1)[-1]


@dataclass
class ObjectSpec:
    """A tagged recipe value, kept as data instead of being constructed.

    Attributes:
        kind: ``"new"`` (construct an object), ``"name"`` (a callable reference, possibly with bound
            keyword arguments), ``"apply"`` / ``"applyref"`` (call at load time), ``"module"`` (a module
            object), ``"include"`` (another YAML file) or ``"placeholder"`` (``!PLACEHOLDER``, a value
            that must be overridden); nothing is ever imported, called or read here.
        target: the dotted Python path named by the tag, e.g. ``cosyvoice.flow.flow.MaskedDiffWithXvec``
            (the file name for ``include``, ``PLACEHOLDER`` for ``placeholder``).
        args: positional arguments (from a YAML sequence node).
        kwargs: keyword arguments (from a YAML mapping node).
    """

    kind: str
    target: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The final component of :attr:`target`, e.g. ``MaskedDiffWithXvec``: what the builder matches on."""
        return target_name(self.target)

    @property
    def tag(self) -> str:
        """The tag as written in the recipe, e.g. ``!new:cosyvoice.flow.flow.MaskedDiffWithXvec``."""
        return "!PLACEHOLDER" if self.kind == "placeholder" else f"!{self.kind}:{self.target}"


@dataclass
class RefSpec:
    """An unresolved ``!ref``/``!copy`` expression such as ``<sample_rate>`` or ``<a> * 2``."""

    expression: str
    copy: bool = False


_REF_PATTERN = re.compile(r"<([^<>]+)>")

# YAML 1.1 (PyYAML) reads "1e-06" as a string; hyperpyyaml (ruamel, YAML 1.2) reads it as a float.
_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that turns hyperpyyaml tags into :class:`ObjectSpec`/:class:`RefSpec` data."""


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789."))


def _construct_tagged(kind: str):
    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> ObjectSpec:
        target = suffix.strip()
        if not target:
            raise yaml.constructor.ConstructorError(None, None, f"tag !{kind}: names no Python object", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return ObjectSpec(kind, target, [], dict(loader.construct_mapping(node, deep=True)))
        if isinstance(node, yaml.SequenceNode):
            return ObjectSpec(kind, target, list(loader.construct_sequence(node, deep=True)), {})
        value = loader.construct_scalar(node)
        return ObjectSpec(kind, target, [] if value in ("", None) else [value], {})

    return construct


def _construct_ref(copy_value: bool):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> RefSpec:
        if not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "!ref/!copy expects a scalar such as <key>", node.start_mark
            )
        return RefSpec(str(loader.construct_scalar(node)), copy=copy_value)

    return construct


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    """``!tuple (1, 2)`` (scalar, parentheses optional) or ``!tuple [1, 2]`` (sequence) -> a tuple."""
    if isinstance(node, yaml.SequenceNode):
        return tuple(loader.construct_sequence(node, deep=True))
    text = str(loader.construct_scalar(node)).strip()
    try:
        value = ast.literal_eval(text if text.startswith("(") else f"({text},)")
    except (ValueError, SyntaxError) as error:
        raise yaml.constructor.ConstructorError(
            None, None, f"!tuple expects literals such as (1, 2), found {text!r}", node.start_mark
        ) from error
    return tuple(value) if isinstance(value, tuple) else (value,)


def _construct_placeholder(loader: yaml.SafeLoader, node: yaml.Node) -> ObjectSpec:
    return ObjectSpec("placeholder", "PLACEHOLDER")


# hyperpyyaml's object tags; every one is recorded as data (a module is never imported, a function never called)
for _kind in ("new", "name", "apply", "applyref", "module", "include"):
    _RecipeLoader.add_multi_constructor(f"!{_kind}:", _construct_tagged(_kind))
_RecipeLoader.add_constructor("!ref", _construct_ref(False))
_RecipeLoader.add_constructor("!copy", _construct_ref(True))
_RecipeLoader.add_constructor("!tuple", _construct_tuple)
_RecipeLoader.add_constructor("!PLACEHOLDER", _construct_placeholder)

_BINARY_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _evaluate_arithmetic(expression: str) -> Any:
    """Evaluate a plain numeric expression (numbers, + - * / // % **, parentheses); never calls anything."""

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
            return _BINARY_OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = evaluate(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError("not a numeric expression")

    return evaluate(ast.parse(expression, mode="eval"))


class _Resolver:
    """Resolves :class:`RefSpec` values against the parsed document (with cycle detection)."""

    def __init__(self, document: dict[str, Any], source: str) -> None:
        self.document = document
        self.source = source
        self.active: list[str] = []

    def lookup(self, reference: str) -> Any:
        parts = re.findall(r"[^\[\]]+", reference.strip())
        if not parts:
            raise CheckpointConfigError(f"{self.source}: empty reference <{reference}>")
        if reference in self.active:
            chain = " -> ".join(self.active + [reference])
            raise CheckpointConfigError(f"{self.source}: circular !ref chain {chain}")
        self.active.append(reference)
        try:
            value: Any = self.document
            for depth, part in enumerate(parts):
                container = value.kwargs if isinstance(value, ObjectSpec) else value
                if isinstance(container, dict) and part in container:
                    value = container[part]
                elif isinstance(container, list) and part.isdigit() and int(part) < len(container):
                    value = container[int(part)]
                else:
                    known = sorted(container) if isinstance(container, dict) else "none"
                    raise CheckpointConfigError(
                        f"{self.source}: !ref <{reference}> names '{part}' which is not defined at "
                        f"'{'/'.join(parts[:depth]) or 'top level'}' (keys there: {known}); "
                        "define the key before referencing it"
                    )
            return self.resolve(value)
        finally:
            self.active.pop()

    def resolve_expression(self, spec: RefSpec) -> Any:
        text = spec.expression.strip()
        whole = _REF_PATTERN.fullmatch(text)
        if whole:
            value = self.lookup(whole.group(1))
            return copy.deepcopy(value) if spec.copy else value
        substituted = _REF_PATTERN.sub(lambda m: str(self.lookup(m.group(1))), text)
        try:
            return _evaluate_arithmetic(substituted)
        except (ValueError, SyntaxError):
            return substituted

    def resolve(self, value: Any) -> Any:
        if isinstance(value, RefSpec):
            return self.resolve_expression(value)
        if isinstance(value, ObjectSpec):
            value.args = [self.resolve(item) for item in value.args]
            value.kwargs = {key: self.resolve(item) for key, item in value.kwargs.items()}
            return value
        if isinstance(value, dict):
            for key in list(value):
                value[key] = self.resolve(value[key])
            return value
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(item) for item in value)
        return value

    def resolve_document(self) -> dict[str, Any]:
        """Resolve every top-level entry; only :data:`INFERENCE_KEYS` (and what they reference) must resolve."""
        for key in list(self.document):
            try:
                self.document[key] = self.resolve(self.document[key])
            except CheckpointConfigError:
                if key in INFERENCE_KEYS:
                    raise
                # an entry inference never reads (training, data pipeline, text LM): keep it unresolved
        return self.document


def parse_recipe(text: str, source: str = "<recipe>") -> dict[str, Any]:
    """Parse hyperpyyaml recipe text into plain data with every ``!ref`` resolved.

    Args:
        text: the YAML text.
        source: a name for error messages (usually the file path).

    Returns:
        The top-level mapping; tagged values are :class:`ObjectSpec` instances.  An entry outside
        :data:`INFERENCE_KEYS` whose ``!ref`` cannot be resolved is kept with its unresolved
        :class:`RefSpec` values (inference never reads it).

    Raises:
        CheckpointConfigError: the text is not valid YAML, its top level is not a mapping, or a
            ``!ref`` needed by ``flow``/``hift``/``feat_extractor`` names an undefined key or forms a cycle.
    """
    try:
        document = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - SafeLoader subclass, builds no objects
    except yaml.YAMLError as error:
        raise CheckpointConfigError(
            f"{source} is not a readable hyperpyyaml recipe: {error}; pass the cosyvoice.yaml from the "
            "official CosyVoice-300M-25Hz folder unchanged"
        ) from error
    if not isinstance(document, dict):
        raise CheckpointConfigError(
            f"{source}: expected a mapping of recipe keys (flow, hift, feat_extractor, ...) at the top level, "
            f"found {type(document).__name__}"
        )
    return _Resolver(document, source).resolve_document()


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read ``cosyvoice.yaml`` from ``path`` with :func:`parse_recipe` (UTF-8)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointConfigError(f"{path} is not UTF-8 text: {error}", file=path) from error
    try:
        return parse_recipe(text, source=str(path))
    except CheckpointConfigError as error:
        error.file = path
        raise
