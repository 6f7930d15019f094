"""Static safety check for the jq programs in Karta definitions.

libjq exposes no syntax tree, so this works on tokens. It refuses what Karta's own check refuses
(assignment operators, `del`, `range`, `paths`, `recurse`, `walk`, `repeat`, `..`) and, because a
definition runs inside the API server's request path, also what could run away or reach outside the
input: unbounded loops, self-recursive functions, the process environment, I/O and debugging builtins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Karta's own list (reference/karta.md §2.1).
_KARTA_REFUSED_FUNCTIONS = frozenset({"del", "range", "paths", "recurse", "walk", "repeat"})
# Ours, on top: loops without a bound, combinatorial blow-up, the environment, I/O and side channels.
_EXTRA_REFUSED_FUNCTIONS = frozenset(
    {
        "while",
        "until",
        "leaf_paths",
        "recurse_down",
        "combinations",
        "env",
        "input",
        "inputs",
        "debug",
        "stderr",
        "input_filename",
        "input_line_number",
        "halt",
        "halt_error",
        "get_search_list",
        "get_prog_origin",
        "get_jq_origin",
        "modulemeta",
        "builtins",
    }
)
REFUSED_FUNCTIONS = _KARTA_REFUSED_FUNCTIONS | _EXTRA_REFUSED_FUNCTIONS
REFUSED_VARIABLES = frozenset({"$ENV", "$__prog_args"})
REFUSED_KEYWORDS = frozenset({"import", "include"})
MODIFYING_OPERATORS = ("//=", "|=", "+=", "-=", "*=", "/=", "%=", "=")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Longest first, so "//=" is not read as "//" then "=".
_OPERATORS = (
    "?//", "//=", "|=", "+=", "-=", "*=", "/=", "%=", "==", "!=", "<=", ">=", "//",
    "|", ",", "+", "-", "*", "/", "%", "=", "<", ">", "(", ")", "[", "]", "{", "}", ":", ";", "?",
)  # fmt: skip
# Words that are syntax, not function calls.
_KEYWORDS = frozenset(
    {"def", "if", "then", "elif", "else", "end", "as", "reduce", "foreach", "try", "catch", "label",
     "and", "or", "__loc__", "import", "include"}
)  # fmt: skip


class JqSyntaxError(ValueError):
    """The tokenizer could not read the program (libjq's compiler gives the detailed message)."""


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "field", "var", "op", "num", "str", "format", "recurse"
    text: str
    pos: int


def tokenize(source: str) -> list[Token]:
    """Split a jq program into tokens; string interpolations are tokenized in place."""
    tokens: list[Token] = []
    _scan(source, 0, tokens, stop_at_paren=False)
    return tokens


def _scan(src: str, i: int, out: list[Token], *, stop_at_paren: bool) -> int:
    """Tokenize from i; with stop_at_paren, return at the ')' closing a string interpolation."""
    depth = 0
    n = len(src)
    while i < n:
        after = _scan_word(src, i, out)
        if after is not None:
            i = after
            continue
        op = next((op for op in _OPERATORS if src.startswith(op, i)), None)
        if op is None:
            raise JqSyntaxError(f"unexpected character {src[i]!r} at {i}")
        if stop_at_paren and op == ")" and depth == 0:
            return i + 1
        depth += {"(": 1, ")": -1}.get(op, 0)
        out.append(Token("op", op, i))
        i += len(op)
    if stop_at_paren:
        raise JqSyntaxError("unterminated string interpolation")
    return i


def _scan_word(src: str, i: int, out: list[Token]) -> int | None:
    """Whitespace, a comment, or one token that is not an operator; where scanning goes on, or None."""
    c = src[i]
    if c.isspace():
        return i + 1
    if c == "#":
        newline = src.find("\n", i)
        return len(src) if newline < 0 else newline
    if c == '"':
        return _scan_string(src, i, out)
    if c in "@$":
        m = _IDENT.match(src, i + 1)
        if not m:
            raise JqSyntaxError(f"bad {'format' if c == '@' else 'variable'} at {i}")
        out.append(Token("format" if c == "@" else "var", src[i : m.end()], i))
        return m.end()
    if c == ".":
        return _scan_dot(src, i, out)
    if c.isdigit():
        num = _NUMBER.match(src, i)
        assert num is not None
        out.append(Token("num", num.group(0), i))
        return num.end()
    m = _IDENT.match(src, i)
    if m:
        out.append(Token("ident", m.group(0), i))
        return m.end()
    return None


def _scan_dot(src: str, i: int, out: list[Token]) -> int:
    """`..`, a `.field`, a number such as `.5`, or the identity `.`."""
    if src.startswith("..", i):
        out.append(Token("recurse", "..", i))
        return i + 2
    m = _IDENT.match(src, i + 1)
    if m and "::" not in m.group(0):
        out.append(Token("field", m.group(0), i))
        return m.end()
    num = _NUMBER.match(src, i)
    if num and num.end() > i + 1:
        out.append(Token("num", num.group(0), i))
        return num.end()
    out.append(Token("op", ".", i))
    return i + 1


def _scan_string(src: str, i: int, out: list[Token]) -> int:
    start = i
    i += 1
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            if i + 1 < n and src[i + 1] == "(":
                i = _scan(src, i + 2, out, stop_at_paren=True)
                continue
            i += 2
            continue
        if c == '"':
            out.append(Token("str", src[start : i + 1], start))
            return i + 1
        i += 1
    raise JqSyntaxError("unterminated string")


def check_expression(source: str) -> list[str]:
    """Return why the program is refused (empty when it is acceptable)."""
    try:
        tokens = tokenize(source)
    except JqSyntaxError as exc:
        return [f"cannot be read: {exc}"]
    problems: list[str] = []
    for index, token in enumerate(tokens):
        if token.kind == "recurse":
            problems.append("recursive descent operator '..' is not allowed")
        elif token.kind == "op" and token.text in MODIFYING_OPERATORS:
            problems.append(f"modifying operator '{token.text}' is not allowed")
        elif token.kind == "var" and token.text in REFUSED_VARIABLES:
            problems.append(f"variable '{token.text}' is not allowed")
        elif token.kind == "ident" and token.text in REFUSED_KEYWORDS:
            problems.append(f"'{token.text}' of modules is not allowed")
        elif token.kind == "ident" and _is_call(tokens, index) and token.text in REFUSED_FUNCTIONS:
            if token.text == "del":
                problems.append("del function is not allowed")
            elif token.text in _KARTA_REFUSED_FUNCTIONS or token.text in {"while", "until", "combinations"}:
                problems.append(f"function '{token.text}' may produce excessive output and is not allowed")
            else:
                problems.append(f"function '{token.text}' reaches outside the input and is not allowed")
    problems.extend(_recursive_definitions(tokens))
    return list(dict.fromkeys(problems))


def _is_call(tokens: list[Token], index: int) -> bool:
    """An identifier is a function reference unless it is a keyword, a def name or an object key."""
    name = tokens[index].text
    if name in _KEYWORDS:
        return False
    previous = tokens[index - 1] if index > 0 else None
    if previous is not None and previous.kind == "ident" and previous.text == "def":
        return False
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    # `{name: value}` or `{name}`: an object key, not a call. `name::x` never reaches here.
    return not (
        following is not None
        and following.kind == "op"
        and following.text in {":", ",", "}"}
        and previous is not None
        and previous.kind == "op"
        and previous.text in {"{", ","}
        and _inside_object(tokens, index)
    )


def _inside_object(tokens: list[Token], index: int) -> bool:
    depth = 0
    for token in reversed(tokens[:index]):
        if token.kind != "op":
            continue
        if token.text in {")", "]", "}"}:
            depth += 1
        elif token.text in {"(", "["}:
            if depth == 0:
                return False
            depth -= 1
        elif token.text == "{":
            if depth == 0:
                return True
            depth -= 1
    return False


def _recursive_definitions(tokens: list[Token]) -> list[str]:
    """A `def f: ... f ...;` calls itself: jq scoping makes that the only way to recurse."""
    problems: list[str] = []
    for index, token in enumerate(tokens):
        if not (token.kind == "ident" and token.text == "def" and index + 1 < len(tokens)):
            continue
        name = tokens[index + 1].text
        body_end = _definition_end(tokens, index + 2)
        body = tokens[index + 2 : body_end]
        if any(t.kind == "ident" and t.text == name for t in body):
            problems.append(f"function '{name}' calls itself; recursion is not allowed")
    return problems


def _definition_end(tokens: list[Token], start: int) -> int:
    """Index of the ';' that ends the definition starting at start (nested defs included)."""
    nesting = 0
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token.kind == "ident" and token.text == "def":
            nesting += 1
        # A parameter list `def f(a; b):` also uses ';' but sits inside parentheses.
        elif token.kind == "op" and token.text == ";" and _paren_depth(tokens, start, index) == 0:
            if nesting == 0:
                return index
            nesting -= 1
    return len(tokens)


def _paren_depth(tokens: list[Token], start: int, stop: int) -> int:
    depth = 0
    for token in tokens[start:stop]:
        if token.kind == "op" and token.text in {"(", "[", "{"}:
            depth += 1
        elif token.kind == "op" and token.text in {")", "]", "}"}:
            depth -= 1
    return depth
