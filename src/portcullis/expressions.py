"""Authorization rules as CEL expressions: compiled and type-checked at load, evaluated with a cost limit.

Why CEL (the Common Expression Language) and Google's own Python runtime (``cel-expr-python``, a
binding of cel-cpp): a rule is written by an operator and run on every request, so the language
must be unable to loop, call out or allocate without bound, and errors must be caught when the
config is loaded, not on the first request that reaches the rule. CEL is not Turing complete;
cel-cpp type-checks an expression against declared variables (an undeclared name, a string compared
with an int, a result that is not a bool are config errors, with the column), evaluates in about
10 µs, and stops any evaluation after 10,000 comprehension iterations ("Iteration budget exceeded"),
so a rule that tries to run forever costs at most a few milliseconds and is then refused. The
pure-Python ``cel-python`` checks no types and has no budget; expressions here are also capped at
``MAX_EXPRESSION_CHARS``.

What a rule sees (every name is declared; nothing else is reachable):

- ``request``: ``method``, ``path``, ``host``, ``scheme``, ``headers`` and ``query`` (only the
  header and query names the route's ``authorize.headers`` / ``authorize.query`` list, lower-cased
  header names; a listed name sent twice makes every rule of the route refuse: a rule must not read
  one copy while the backend reads the other);
- ``params``: the route template's path parameters;
- ``principal``: ``id`` (the consumer), ``sub`` (the JWT subject, else the consumer), ``method``
  (``api_key``, ``jwt``, ...), ``scopes``, ``roles``, ``claims`` (the verified JWT claims),
  ``key_id``, ``issuer``;
- ``context``: ``client_ip`` (after trusted-proxy resolution) and ``route``;
- ``now``: the request's time, a timestamp (``now.getHours("Europe/Berlin")``);
- ``body``: the parsed JSON body, only in rules of routes that validate a JSON body (those rules
  run after the body is read and checked, see ``stage5_validate/body_rules``);
- ``ip_in(address, "10.0.0.0/8")``: whether an address is in a network (false for anything that is
  not an address).

A rule that evaluates to anything but ``true`` (``false``, a missing key, a type error at run time,
the budget spent) refuses the request: rules fail closed.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from cel_expr_python import cel

from portcullis.identity.principal import Principal

__all__ = [
    "MAX_EXPRESSION_CHARS", "CompiledExpression", "ExpressionError", "compile_expression", "principal_variables",
]

MAX_EXPRESSION_CHARS = 4096
_T = cel.Type
_BODY_UNDECLARED = re.compile(r"undeclared reference to 'body[.']")


class ExpressionError(ValueError):
    """An expression that cannot be a rule: syntax, an undeclared name, a type error, not a bool."""


def _ip_in(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _variables(with_body: bool) -> dict[str, Any]:
    variables = {
        "request": _T.Map(_T.STRING, _T.DYN),
        "params": _T.Map(_T.STRING, _T.STRING),
        "principal": _T.Map(_T.STRING, _T.DYN),
        "context": _T.Map(_T.STRING, _T.DYN),
        "now": _T.TIMESTAMP,
    }
    if with_body:
        variables["body"] = _T.DYN
    return variables


@cache
def _environment(with_body: bool) -> Any:
    ip_in = cel.FunctionDecl("ip_in", [cel.Overload("ip_in_string_string", _T.BOOL, [_T.STRING, _T.STRING],
                                                    impl=_ip_in)])
    return cel.NewEnv(variables=_variables(with_body), functions=[ip_in])


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A checked rule, ready to evaluate. ``uses_body``: it reads ``body`` (runs once the body is checked)."""

    text: str
    uses_body: bool
    _program: Any

    def allows(self, variables: Mapping[str, Any]) -> bool:
        """True only when the rule evaluates to ``true``; any error, budget included, is a refusal."""
        try:
            result = self._program.eval(data=variables)
        except RuntimeError:  # "Iteration budget exceeded" and other evaluation aborts
            return False
        return result.type() == _T.BOOL and result.value() is True


def compile_expression(text: str) -> CompiledExpression:
    """Parse and type-check ``text`` as a rule; raises ``ExpressionError`` with CEL's message and column."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"a rule is at most {MAX_EXPRESSION_CHARS} characters")
    uses_body = False
    try:
        program = _environment(False).compile(text)
    except RuntimeError as exc:
        if not _BODY_UNDECLARED.search(str(exc)):
            raise ExpressionError(_clean(exc)) from None
        uses_body = True
        try:
            program = _environment(True).compile(text)
        except RuntimeError as again:
            raise ExpressionError(_clean(again)) from None
    if program.return_type() != _T.BOOL:
        raise ExpressionError(f"a rule must be true or false, not {program.return_type().name().lower()}")
    return CompiledExpression(text, uses_body, program)


def principal_variables(principal: Principal) -> dict[str, Any]:
    """``principal`` as every rule sees it, on ingress routes and in egress run-mode requirements."""
    return {"id": principal.consumer_id, "sub": str(principal.claims.get("sub", principal.consumer_id)),
            "method": principal.method, "scopes": sorted(principal.scopes), "roles": sorted(principal.roles),
            "claims": dict(principal.claims), "key_id": principal.key_id or "", "issuer": principal.issuer or ""}


def request_time(wall: float) -> datetime.datetime:
    """``now`` for a request that started at ``wall`` (seconds since the epoch)."""
    return datetime.datetime.fromtimestamp(wall, datetime.UTC)


def _clean(exc: RuntimeError) -> str:
    """CEL's message without its status prefix: ``ERROR: <input>:1:5: ...`` and the caret lines."""
    message = str(exc).removeprefix("INVALID_ARGUMENT: ").removesuffix(" [INVALID_ARGUMENT]")
    return message.replace("ERROR: <input>:", "at ")
