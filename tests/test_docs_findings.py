"""Every finding that README.md and docs/results.md quote from a committed report equals that report's JSON
(issue 41: nine sentences had drifted from the reports they cite).

A finding carries a marker right after it, invisible in the rendered page:

    **-0.23 log2 per doubling (-0.38 .. -0.08)**<!-- check cpu_horizon_constant: -laws.mup.tokens.beta = -0.23;
    -laws.mup.tokens.interval = -0.38 .. -0.08 -->

Each claim is `EXPR OP VALUE`. EXPR is a path into reports/<name>.json: dotted keys; `list{key=value&key=value}`
to pick the one item (or, under an aggregate, every item) that matches, `list{*}` for every item; a leading
`-` to negate (an interval is negated and reversed); a trailing `%` for a fraction read as a percentage; and
`min(...)`, `max(...)` or `count(...)` over the matches. OP, with a space on each side, is `~` (a string that
contains the text that follows), `=` (the value as printed: the JSON number rounded to the decimals written,
an interval as `lo .. hi`, `true`/`false`/`null`, or a bare word for a string), `<` or `>`. Every value a `=`
claim states must also appear in the text between the previous marker and this one, so that the marker
checks what the sentence says (a count may be said in words; markers side by side check the same sentence).
And every interval the findings quote (`a .. b` or `[a, b]`) must be stated by a marker of its paragraph: a
quoted interval nobody checks fails here, unless `<!-- was -->` follows it (a value an earlier version of a
report gave, quoted as history).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/results.md")
MARKER = re.compile(r"<!--\s*check\s+(\w+):\s*(.*?)\s*-->", re.S)
INTERVAL = re.compile(r"([+-]?\d+\.\d+)(?:%)? \.\. ([+-]?\d+\.\d+)|\[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")
WAS = "<!-- was -->"  # after a value quoted from an earlier version of a report: history, not a finding
CLAIM = re.compile(r"^(.*?)\s(~)\s(.*)$|^(.*)\s(=|<|>)\s(.*)$", re.S)  # the last operator with a space on each side


class ClaimError(AssertionError):
    """A claim that the report does not support, or cannot be read."""


def _select(items: list[Any], selector: str) -> list[Any]:
    if selector == "*":
        return list(items)
    conditions = [c.split("=", 1) for c in selector.split("&")]
    return [it for it in items if all(str(it.get(k)) == v for k, v in conditions)]


def resolve(data: Any, path: str) -> list[Any]:
    """Every value at `path` (see the module docstring) in a parsed report."""
    values = [data]
    for part in re.findall(r"\{[^}]*\}|[^.{]+", path):
        if part.startswith("{"):
            values = [m for v in values for m in _select(v, part[1:-1])]
        else:
            values = [v[part] for v in values]
    return values


def evaluate(data: Any, expr: str) -> Any:
    """The value of one claim's expression."""
    expr = expr.strip()
    m = re.fullmatch(r"(min|max|count)\((.*)\)", expr)
    if m:
        values = [x for v in resolve_scaled(data, m.group(2)) for x in (v if isinstance(v, list) else [v])
                  if x is not None]
        if m.group(1) == "count":
            return len(values)
        if not values:
            raise ClaimError(f"{expr}: nothing matches")
        return min(values) if m.group(1) == "min" else max(values)
    values = resolve_scaled(data, expr)
    if len(values) != 1:
        raise ClaimError(f"{expr}: {len(values)} matches, not one")
    return values[0]


def resolve_scaled(data: Any, expr: str) -> list[Any]:
    negate, percent = expr.startswith("-"), expr.endswith("%")
    path = expr[1 if negate else 0: -1 if percent else None]
    out = []
    for v in resolve(data, path):
        if isinstance(v, list):
            v = [None if x is None else x * (100 if percent else 1) for x in v]
            v = [None if x is None else -x for x in reversed(v)] if negate else v
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            v = v * (100 if percent else 1) * (-1 if negate else 1)
        out.append(v)
    return out


def _as_printed(value: float, written: str) -> bool:
    decimals = len(written.split(".")[1]) if "." in written else 0
    return float(f"{value:.{decimals}f}") == float(written) or (
        decimals > 0 and math.isclose(round(value, decimals), float(written), abs_tol=10**-decimals / 2 + 1e-12))


def check_claim(data: Any, claim: str) -> list[str]:
    """The values a claim states, each as written (for the text check). Raises ClaimError where the report
    says otherwise."""
    m = CLAIM.match(" ".join(claim.split()))  # a marker may wrap anywhere
    if not m:
        raise ClaimError(f"cannot read the claim {claim!r}")
    expr, op, written = (m.group(1), m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5), m.group(6))
    written = written.strip()
    value = evaluate(data, expr)
    if op == "~":
        if not isinstance(value, str) or written not in value:
            raise ClaimError(f"{expr} = {value!r} does not say {written!r}")
        return []
    if op in "<>":
        if value is None or not (value < float(written) if op == "<" else value > float(written)):
            raise ClaimError(f"{expr} = {value}, not {op} {written}")
        return []
    if " .. " in written:
        lo, hi = (w.strip() for w in written.split(" .. "))
        if not (isinstance(value, list) and len(value) == 2 and None not in value
                and _as_printed(value[0], lo) and _as_printed(value[1], hi)):
            raise ClaimError(f"{expr} = {value}, not {written}")
        return [lo, hi]
    if written in ("true", "false", "null"):
        if value != json.loads(written):
            raise ClaimError(f"{expr} = {value!r}, not {written}")
        return []
    if re.fullmatch(r"[+-]?\d+(\.\d+)?", written):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _as_printed(value, written):
            raise ClaimError(f"{expr} = {value!r}, not {written}")
        return [] if expr.startswith("count(") else [written]  # a count may be said in words ("all three")
    if value != written:
        raise ClaimError(f"{expr} = {value!r}, not {written!r}")
    return []


def check_text(text: str, reports: dict[str, Any]) -> list[str]:
    """Every problem with the markers of one document: claims the reports do not support, stated values the
    sentence does not say, quoted intervals no marker checks."""
    problems = []
    start = 0
    stated_by_paragraph: dict[int, set[tuple[str, str]]] = {}
    for m in MARKER.finditer(text):
        name, body = m.group(1), m.group(2)
        before = text[start:m.start()]
        paragraph = text.rfind("\n\n", 0, m.start())
        for claim in (c for c in body.split(";") if c.strip()):
            try:
                written = check_claim(reports[name], claim)
            except (ClaimError, KeyError, IndexError, TypeError) as e:
                problems.append(f"{name}: {claim.strip()}: {e}")
                continue
            for w in written:
                if w.lstrip("+") not in before.replace("+", ""):
                    problems.append(f"{name}: {claim.strip()}: {w} is not in the sentence it marks")
            if len(written) == 2:
                stated_by_paragraph.setdefault(paragraph, set()).add((_norm(written[0]), _norm(written[1])))
        if text[m.end():].lstrip(" ").startswith("<!--"):
            continue  # markers side by side check the same sentence
        start = m.end()
    for m in INTERVAL.finditer(text):
        if _inside_marker(text, m.start()) or text[m.end():m.end() + 40].lstrip(")]*% ").startswith(WAS):
            continue
        lo, hi = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        stated = stated_by_paragraph.get(text.rfind("\n\n", 0, m.start()), set())
        if (_norm(lo), _norm(hi)) not in stated:
            problems.append(f"the interval {m.group(0)!r} is quoted without a marker that checks it: "
                            f"...{text[max(0, m.start() - 80):m.end()]!r}")
    return problems


def _norm(x: str) -> str:
    return f"{float(x):.6f}"


def _inside_marker(text: str, i: int) -> bool:
    opened = text.rfind("<!--", 0, i)
    return opened >= 0 and text.rfind("-->", 0, i) < opened


def _reports() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in (ROOT / "reports").glob("*.json")}


def _findings(doc: str) -> str:
    """The part of a document that quotes findings: README's 'One result' and 'Beyond width and tokens', all of
    docs/results.md."""
    text = (ROOT / doc).read_text()
    if doc == "README.md":
        return text[text.index("## One result"):text.index("## Where to go next")]
    return text


@pytest.mark.parametrize("doc", DOCS)
def test_every_finding_quoted_in_the_docs_equals_its_report(doc):
    text = _findings(doc)
    assert MARKER.search(text), f"{doc}: no finding is marked"
    problems = check_text(text, _reports())
    assert not problems, f"{doc}:\n  " + "\n  ".join(problems)


# Issue 41's list of sentences that had drifted from their reports, each with the marker its claim needs:
# the check must fail on every one of them (against today's committed reports).
STALE = [
    ("batch: the boundary lies 1.3 to 2 octaves above the optimum",
     "<!-- check cpu_batch: min(cells{parametrization=mup}.margin_log2) = 1.3; "
     "max(cells{parametrization=mup}.margin_log2) = 2 -->"),
    ("horizon: every transferred rate more than 1.2 octaves below its boundary",
     "<!-- check cpu_horizon_cosine: min(stability{*}.margin) > 1.2 -->"),
    ("horizon: the boundary between 2^-4 and 2^-3 in every cell",
     "<!-- check cpu_horizon_constant: count(cells{stability_censored=True}) = 0 -->"),
    ("batch: measured or fitted regrets of 4.8% to 27%",
     "<!-- check cpu_batch: max(comparisons{kind=rule&outcome=breaks}.regret%) = 27 -->"),
    ("ladder: 5 seeds measure 0.24-0.33", "<!-- check cpu_output_mult: noise.mup.optimum.sd = 0.33 -->"),
    ("cosine falls too, -0.12 (-0.25 .. +0.00)",
     "<!-- check cpu_horizon_cosine: max(-laws.mup.tokens.interval) < -0.005 -->"),
    ("mup#66: 96 -> 768 breaks",
     "<!-- check public_mup_issue66: comparisons{id=width[mup 96->768]}.outcome = breaks -->"),
]


@pytest.mark.parametrize(("sentence", "marker"), STALE, ids=[s for s, _ in STALE])
def test_the_check_fails_on_each_sentence_that_had_drifted(sentence, marker):
    problems = check_text(f"{sentence} {marker}\n", _reports())
    assert problems, f"{sentence!r} passed its check"


def test_a_quoted_interval_without_a_marker_fails_and_a_marked_one_passes():
    reports = {"r": {"laws": {"mup": {"width": {"slope": -0.0512, "interval": [-0.161, 0.0633]}}}}}
    unmarked = "muP moves it by -0.05 log2 per doubling (-0.16 .. +0.06).\n"
    assert any("without a marker" in p for p in check_text(unmarked, reports))
    marked = unmarked.rstrip("\n") + ("<!-- check r: laws.mup.width.slope = -0.05; "
                                      "laws.mup.width.interval = -0.16 .. +0.06 -->\n")
    assert check_text(marked, reports) == []
    wrong = marked.replace("-0.16 .. +0.06).", "-0.17 .. +0.06).").replace("= -0.16 ..", "= -0.17 ..")
    assert any("not -0.17 .. +0.06" in p for p in check_text(wrong, reports))
