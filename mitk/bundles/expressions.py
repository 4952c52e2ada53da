"""The ``$`` expressions mitk understands, interpreted from the syntax tree: never ``eval``.

Accepted: literals (numbers, strings, lists, tuples, dicts, ``True``/``False``/``None``), ``@`` references,
arithmetic and string joining (``+ - * / // %``, unary ``-``), and the dtype names of :data:`.targets.CONSTANTS`
(``$torch.float32``). Anything else — a call, a lambda, an import, attribute access, subscripts, comprehensions —
is refused with the key that holds it.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

from mitk.bundles.targets import read_constant
from mitk.errors import CheckpointError

REFERENCE = re.compile(r"@([A-Za-z_][\w]*(?:(?:#|::)[\w]+)*)")
"""An ``@`` reference inside an expression: ``@name``, ``@a#b#0``, ``@a::b``."""

_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_LONGEST = 100_000
"""The longest string or list an expression may make (``'x' * 10**9`` is refused, not computed)."""


def evaluate(expression: str, key: str, reference: Callable[[str], Any]) -> Any:
    """The value of ``expression`` (without its ``$``), resolving ``@`` references through ``reference``."""
    names: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        name = f"__mitk_ref_{len(names)}__"
        names[name] = match.group(1)
        return name

    source = REFERENCE.sub(placeholder, expression.strip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise CheckpointError(f"{key}: expression {_short(expression)} is not in the subset mitk interprets "
                              "(literals, @references, arithmetic, dtype names)") from None

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [walk(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {walk(k): walk(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
        if isinstance(node, ast.Name) and node.id in names:
            return reference(names[node.id])
        if isinstance(node, ast.Attribute):
            return read_constant(_dotted(node, key), key)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = walk(node.operand)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if _sized(left) * _count(right) > _LONGEST or _sized(right) * _count(left) > _LONGEST:
                raise CheckpointError(f"{key}: expression {_short(expression)} makes too long a value")
            try:
                return _OPERATORS[type(node.op)](left, right)
            except (TypeError, ZeroDivisionError) as error:
                raise CheckpointError(f"{key}: expression {_short(expression)} fails: {error}") from None
        what = type(node).__name__.lower()
        raise CheckpointError(f"{key}: expression {_short(expression)} uses a {what}, which mitk does not run "
                              "(only literals, @references, arithmetic and dtype names)")

    return walk(tree.body)


def _dotted(node: ast.AST, key: str) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id.startswith("__mitk_ref_"):
        raise CheckpointError(f"{key}: attribute access is not in the subset mitk interprets")
    return ".".join([node.id, *reversed(parts)])


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 1


def _count(value: Any) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def _short(expression: str) -> str:
    text = expression if len(expression) <= 60 else expression[:57] + "..."
    return repr("$" + text)
