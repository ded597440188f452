"""YAML syntax errors told at the line a person has to fix.

PyYAML marks where its parser gave up, which is often a line or more after the mistake:
an unclosed quote is noticed at the end of the file, an unclosed `[` at the next key, a
missing `:` on the following line. Each known shape is mapped back to its cause here.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# Contexts whose mark is where the mistake is: something opened there and never closed.
_OPENED_AT_CONTEXT = {
    "while scanning a quoted scalar": "this quoted value is never closed",
    "while parsing a flow sequence": "this '[' list is never closed with ']'",
    "while parsing a flow mapping": "this '{' mapping is never closed with '}'",
    "while scanning a simple key": "a ':' is missing after the key (write 'key: value')",
}


@dataclass(frozen=True)
class SyntaxProblem:
    line: int  # 1-based
    message: str


def explain(text: str, exc: yaml.MarkedYAMLError) -> SyntaxProblem:
    """The line to fix and a plain-words message for a YAML syntax error in `text`."""
    problem = exc.problem or "invalid YAML"
    if exc.context in _OPENED_AT_CONTEXT and exc.context_mark is not None:
        line = exc.context_mark.line + 1
        return SyntaxProblem(line, f"YAML syntax error: {_OPENED_AT_CONTEXT[exc.context]}")
    mark = exc.problem_mark
    if mark is None:
        return SyntaxProblem(1, f"YAML syntax error: {problem}")
    noticed = mark.line + 1
    runaway = _runaway_quote(text, mark)
    if runaway is not None:
        return runaway
    if "'\\t'" in problem:
        return SyntaxProblem(noticed, "YAML syntax error: a tab character; indent with spaces")
    if problem == "mapping values are not allowed here":
        return _unexpected_colon(text, mark)
    if problem.startswith("expected <block end>, but found '<scalar>'"):
        scalar = _last_scalar(text, mark)
        if scalar is not None and scalar.end_mark.line + 1 == noticed:
            message = "text after a quoted value; put the whole value in the quotes"
            return SyntaxProblem(noticed, f"YAML syntax error: {message}")
    if problem.startswith("expected <block end>"):
        message = "this line's indentation does not match the lines above it"
        return SyntaxProblem(noticed, f"YAML syntax error: {message}")
    context = f" ({exc.context})" if exc.context else ""
    return SyntaxProblem(noticed, f"YAML syntax error: {problem}{context}")


def _runaway_quote(text: str, mark: yaml.Mark) -> SyntaxProblem | None:
    """An unclosed quote that a later value's quote happened to close: the text in between
    became one long value and the error shows up at that later line."""
    noticed = mark.line + 1
    scalar = _last_scalar(text, mark)
    if scalar is None or scalar.style not in ("'", '"'):
        return None
    start, end = scalar.start_mark.line + 1, scalar.end_mark.line + 1
    if start == end or end != noticed:
        return None
    message = f"this quoted value runs on to line {end}: is its closing quote missing?"
    return SyntaxProblem(start, f"YAML syntax error: {message}")


def _unexpected_colon(text: str, mark: yaml.Mark) -> SyntaxProblem:
    """A ':' the scanner cannot take. Which line is wrong depends on the plain text before it:
    text in key position that ran on from an earlier line lacks its own ':' (fix that
    line); a value that ran on was followed by a line indented too deep (fix this one)."""
    noticed = mark.line + 1
    scalar = _last_scalar(text, mark)
    if scalar is not None and scalar.start_mark.line + 1 < noticed:
        start = scalar.start_mark
        before = text.splitlines()[start.line][: start.column]
        if before.strip() in ("", "-"):
            message = "a ':' is missing after the key (write 'key: value')"
            return SyntaxProblem(start.line + 1, f"YAML syntax error: {message}")
        message = "this line is indented deeper than the key above it"
        return SyntaxProblem(noticed, f"YAML syntax error: {message}")
    message = "a ':' inside an unquoted value; put the value in quotes"
    return SyntaxProblem(noticed, f"YAML syntax error: {message}")


def _last_scalar(text: str, mark: yaml.Mark) -> yaml.ScalarToken | None:
    """The last value that ends before `mark`: what the parser read just before giving up."""
    last: yaml.ScalarToken | None = None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.end_mark.index > mark.index:
                break
            if isinstance(token, yaml.ScalarToken):
                last = token
    except yaml.YAMLError:
        pass  # the error explain() was called for: the tokens before it are what we need
    return last
