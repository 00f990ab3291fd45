"""Every study/trial attribute key is named once, in paretoml.search_space.trial_attrs.

A key written out as a string (or built with an f-string) elsewhere cannot be found by
grep and drifts from the one the writer used, so this walks the source of the product,
the benchmarks and the tests and fails on any.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from paretoml.search_space import trial_attrs

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("python_api", "search_space", "objectives", "surrogates", "service", "dashboard", "benchmarks", "tests")
HOME = ROOT / "search_space" / "trial_attrs.py"
KEY = re.compile(r"^paretoml:\w+$")
ATTR_MAPS = {"user_attrs", "system_attrs"}
SETTERS = {"set_user_attr", "set_system_attr"}


def _sources() -> list[Path]:
    return [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py")) if p != HOME]


def _is_attr_map(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in ATTR_MAPS) or (
        isinstance(node, ast.Name) and node.id in ATTR_MAPS)


def _str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


KNOWN = {getattr(trial_attrs, name) for name in trial_attrs.__all__ if name.endswith("_ATTR")}


def literal_keys(tree: ast.AST, strict: bool = True) -> list[tuple[int, str]]:
    """(line, what) of every attribute key written out as a literal in ``tree``. Not
    ``strict`` (tests, whose plain Optuna studies use keys of their own): only our keys."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if _str(node) and KEY.match(node.value):
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.JoinedStr) and node.values and _str(node.values[0]) \
                and node.values[0].value.startswith("paretoml:") and not node.values[0].value.startswith("paretoml: "):
            found.append((node.lineno, "f\"paretoml:...\" key"))
        elif isinstance(node, ast.Subscript) and _is_attr_map(node.value) and _str(node.slice):
            found.append((node.lineno, f"[{node.slice.value!r}]"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and _is_attr_map(node.func.value) and node.args and _str(node.args[0]):
                found.append((node.lineno, f".get({node.args[0].value!r})"))
            if node.func.attr in SETTERS and node.args and _str(node.args[0]):
                found.append((node.lineno, f"{node.func.attr}({node.args[0].value!r})"))
            for kw in node.keywords:
                if kw.arg in ATTR_MAPS and isinstance(kw.value, ast.Dict):
                    found += [(node.lineno, f"{kw.arg}={{{k.value!r}: ...}}") for k in kw.value.keys if _str(k)]
        elif isinstance(node, ast.Compare) and _str(node.left) and any(_is_attr_map(c) for c in node.comparators):
            found.append((node.lineno, f"{node.left.value!r} in ..."))
    if strict:
        return found
    return [(line, what) for line, what in found if "paretoml:" in what or any(repr(k) in what for k in KNOWN)]


def test_no_attribute_key_is_written_out_outside_its_module():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}"
                 for path in _sources()
                 for line, what in literal_keys(ast.parse(path.read_text(), str(path)), strict=path.parts[-len(path.relative_to(ROOT).parts)] != "tests")]
    assert not offenders, "use paretoml.search_space.trial_attrs:\n" + "\n".join(offenders)


def test_the_check_finds_each_kind_of_literal():
    source = '''
t.user_attrs["paretoml:config"]
t.system_attrs.get("failed_trial")
trial.set_user_attr("whatever", 1)
study.enqueue_trial(p, user_attrs={"paretoml:baseline": "x"})
"constraints" in t.system_attrs
trial.set_user_attr(f"paretoml:{key}", 1)
print(f"paretoml: error: {exc}")
t.user_attrs[CONFIG_ATTR]
'''
    assert sorted({line for line, _ in literal_keys(ast.parse(source))}) == [2, 3, 4, 5, 6, 7]
    assert sorted({line for line, _ in literal_keys(ast.parse(source), strict=False)}) == [2, 3, 5, 6, 7]


def test_keys_are_distinct_and_result_keys_are_named():
    values = [getattr(trial_attrs, name) for name in trial_attrs.__all__ if name.endswith("_ATTR")]
    assert len(values) == len(set(values))
    assert trial_attrs.result_attr("timings") == trial_attrs.TIMINGS_ATTR
    try:
        trial_attrs.result_attr("unnamed")
    except KeyError as exc:
        assert "RESULT_ATTRS" in str(exc)
    else:
        raise AssertionError("an unnamed result key must fail")
