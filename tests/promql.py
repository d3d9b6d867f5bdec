"""What a PromQL expression reads: the metric names it selects, the label
matchers on each, and the label names of its by/without/on/ignoring/group_*
clauses. Used by tests/test_deploy.py to hold the Grafana dashboard, the
Prometheus rules and the autoscaler's adapter rules to the metrics a running
sqserve exports.

A small tokenizer and walker rather than a full parser: strings, numbers,
durations and Grafana variables ($var, ${var}, [[var]]) are tokens of their
own, so words inside them are never taken for metric names; an identifier
followed by `(` must be a known function, aggregation or clause keyword (a
misspelt function is an error, not a metric); anything the tokenizer does not
know is an error too, so a malformed expression fails loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year",
    "start", "end",  # the @ modifier's start() and end()
}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}  # take a label list
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
            "group_left", "group_right"}  # group_* may stand without a list

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<num>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]@])
""", re.X)


class PromQLError(ValueError):
    pass


@dataclass
class Matcher:
    label: str
    op: str       # = != =~ !~
    value: str    # unquoted; may hold Grafana variables


@dataclass
class Selector:
    name: Optional[str]                      # None: selected by matchers only
    matchers: List[Matcher] = field(default_factory=list)


@dataclass
class Parsed:
    selectors: List[Selector]
    grouping_labels: Set[str]

    @property
    def metric_names(self) -> Set[str]:
        return {s.name for s in self.selectors if s.name}


def tokenize(expr: str) -> List[Tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def _unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def parse(expr: str) -> Parsed:
    toks = tokenize(expr)
    sels: List[Selector] = []
    groups: Set[str] = set()
    depth = 0
    i = 0

    def peek(k: int) -> Tuple[str, str]:
        return toks[k] if k < len(toks) else ("eof", "")

    def matchers(k: int, sel: Selector) -> int:
        """k: index just after `{`; returns the index after `}`."""
        while True:
            kind, text = peek(k)
            if (kind, text) == ("op", "}"):
                return k + 1
            if kind == "str" and peek(k + 1)[1] in (",", "}"):  # {"quoted.metric.name"}
                sel.name = _unquote(text)
                k += 1
            elif kind == "ident":
                op_kind, op = peek(k + 1)
                vkind, value = peek(k + 2)
                if op not in ("=", "!=", "=~", "!~") or vkind not in ("str", "var"):
                    raise PromQLError(f"bad label matcher after {text!r} in {expr!r}")
                sel.matchers.append(Matcher(text, op, _unquote(value) if vkind == "str" else value))
                if text == "__name__" and op == "=":
                    sel.name = sel.matchers[-1].value
                k += 3
            else:
                raise PromQLError(f"unexpected {text!r} in a label matcher list of {expr!r}")
            if peek(k)[1] == ",":
                k += 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = peek(i + 1)
        if kind == "ident" and nxt == ("op", "("):
            if text in GROUPING:  # a list of label names
                k = i + 2
                while peek(k) != ("op", ")"):
                    lk, lt = peek(k)
                    if lk == "ident":
                        groups.add(lt)
                    elif (lk, lt) != ("op", ","):
                        raise PromQLError(f"unexpected {lt!r} in {text}(...) of {expr!r}")
                    k += 1
                i = k + 1
                continue
            if text not in FUNCTIONS and text not in AGGREGATIONS:
                raise PromQLError(f"unknown function {text!r} in {expr!r}")
            i += 1
            continue
        if kind == "ident":
            if text in KEYWORDS or text in GROUPING:
                i += 1
                continue
            if text in AGGREGATIONS and nxt[0] == "ident" and nxt[1] in ("by", "without"):
                i += 1  # sum by (x) (...)
                continue
            sel = Selector(text)
            i += 1
            if peek(i) == ("op", "{"):
                i = matchers(i + 1, sel)
            sels.append(sel)
            continue
        if (kind, text) == ("op", "{"):
            sel = Selector(None)
            i = matchers(i + 1, sel)
            sels.append(sel)
            continue
        if (kind, text) == ("op", "["):  # range or subquery: durations, variables, ':'
            k = i + 1
            while peek(k) != ("op", "]"):
                if peek(k)[0] == "eof":
                    raise PromQLError(f"unclosed [ in {expr!r}")
                k += 1
            i = k + 1
            continue
        if (kind, text) == ("op", "("):
            depth += 1
        elif (kind, text) == ("op", ")"):
            depth -= 1
            if depth < 0:
                raise PromQLError(f"unbalanced ) in {expr!r}")
        elif (kind, text) == ("op", "}") or (kind, text) == ("op", "]"):
            raise PromQLError(f"unbalanced {text} in {expr!r}")
        i += 1
    if depth:
        raise PromQLError(f"unbalanced ( in {expr!r}")
    return Parsed(sels, groups)


# ---- what a server exports ----------------------------------------------------------

@dataclass
class Exported:
    """Series names a scrape of /metrics offers, with their label names and
    values. A histogram family X is offered as X_bucket, X_sum and X_count
    only; X itself is no series. Counters and gauges without samples yet
    (e.g. requests by code before any request) count by their # TYPE line."""
    names: Set[str]
    labels: Dict[str, Dict[str, Set[str]]]  # name -> label -> values seen

    @classmethod
    def from_metrics(cls, types: Dict[str, str],
                     samples: Iterable[Tuple[str, Dict[str, str], float]]) -> "Exported":
        names = {n for n, t in types.items() if t != "histogram"}
        labels: Dict[str, Dict[str, Set[str]]] = {}
        for n, ls, _ in samples:
            names.add(n)
            d = labels.setdefault(n, {})
            for k, v in ls.items():
                d.setdefault(k, set()).add(v)
        return cls(names, labels)

    @property
    def all_label_names(self) -> Set[str]:
        return {k for d in self.labels.values() for k in d}


def problems(expr: str, exp: Exported, target_labels: Set[str],
             synthetic: Set[str] = frozenset()) -> List[str]:
    """Everything in `expr` that a scrape of the server cannot satisfy: unknown
    metric names, selectors without a name, label names the metric does not
    carry, equality matchers on values it never exports, and grouping labels
    no metric carries. `target_labels` are those Prometheus attaches (job,
    instance, ...); `synthetic` are series Prometheus makes itself (up)."""
    try:
        p = parse(expr)
    except PromQLError as e:
        return [str(e)]
    out = []
    for s in p.selectors:
        if s.name is None:
            out.append(f"a selector without a metric name in {expr!r}")
            continue
        if s.name in synthetic:
            known = {k: set() for k in target_labels}
        elif s.name not in exp.names:
            out.append(f"{s.name} is not exported by sqserve (in {expr!r})")
            continue
        else:
            known = exp.labels.get(s.name, {})
        for m in s.matchers:
            if m.label == "__name__" or m.label in target_labels:
                continue
            if m.label not in known:
                out.append(f"{s.name} has no label {m.label!r} (in {expr!r})")
            elif m.op == "=" and "$" not in m.value and m.value not in known[m.label]:
                out.append(f"{s.name}{{{m.label}={m.value!r}}} matches nothing: exported values "
                           f"are {sorted(known[m.label])} (in {expr!r})")
    for g in sorted(p.grouping_labels - exp.all_label_names - set(target_labels)):
        out.append(f"grouping label {g!r} is on no exported metric (in {expr!r})")
    return out
