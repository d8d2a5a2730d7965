"""A spec is untrusted input: validating one must never run code, never hang and never exhaust
memory. Unsafe YAML tags are reported (E-YAML-TAG, located) and never constructed; the loader never
uses an unsafe PyYAML loader; expressions are parsed to an AST and walked, never evaluated with
eval/exec/compile; refused constructs name themselves and their column; alias bombs, huge numbers
and deep nesting end in a located diagnostic within bounded time and memory."""

from __future__ import annotations

import ast
import builtins
import os
import pathlib
import subprocess
import time
import tracemalloc

import pytest
import yaml
from click.testing import CliRunner
from example_init import example_overrides
from onlytorch_cli.main import cli

import onlytorch.compiler.summary  # noqa: F401  (imported before eval/exec are fenced: dataclasses use exec)
from onlytorch.compile import compile_file, compile_text

from .fixtures import XOR

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
EXAMPLES = sorted(SPECS.glob("*.yaml"))
CORPUS = sorted((pathlib.Path(__file__).resolve().parent / "broken").glob("*.yaml"))


def diagnostics(text: str) -> list[tuple[str, int | None, int | None]]:
    _, report = compile_text(text, "spec.yaml", SPECS)
    return [(d.code, d.line, d.column) for d in report.sorted()]


def validate_cli(path: pathlib.Path, *flags: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", *flags, str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


# ---------------------------------------------------------------- unsafe YAML tags


def unsafe_payloads(marker: pathlib.Path) -> dict[str, str]:
    return {
        "object/apply": f'!!python/object/apply:os.system ["touch {marker}"]',
        "object/apply subprocess": f"!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
        "object/new": f'!!python/object/new:os.system ["touch {marker}"]',
        "object": "!!python/object:builtins.object {}",
        "name": "!!python/name:os.system",
        "module": "!!python/module:os",
        "tuple": "!!python/tuple [1, 2]",
        "custom": "!include /etc/passwd",
    }


PLACES = {
    # where the payload goes -> (old, new with {p}, line, column of the tag)
    "top-level value": ("name: xor\n", "name: {p}\n", 4, 7),
    "nested value": ("  log_every: 50\n", "  log_every: {p}\n", 25, 14),
    "a block sequence item": ("  schedule:\n", "  schedule:\n    - {p}\n", 27, 7),
    "a new input": ("inputs:\n", "inputs:\n  evil: {p}\n", 11, 9),
}


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("kind", sorted(unsafe_payloads(pathlib.Path("m"))))
def test_unsafe_tags_are_reported_where_they_are_and_never_run(
    tmp_path: pathlib.Path, kind: str, place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "PWNED"
    ran: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: ran.append(a) or 0)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: ran.append(a) or 0)
    old, new, line, column = PLACES[place]
    assert old in XOR
    text = XOR.replace(old, new.replace("{p}", unsafe_payloads(marker)[kind]), 1)
    found = diagnostics(text)
    assert ("E-YAML-TAG", line, column) in found, found
    assert all(code == "E-YAML-TAG" for code, _, _ in found), f"the refused value must not cascade: {found}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    code, out = validate_cli(spec)
    assert code == 2
    assert f"{spec}:{line}:{column}: E-YAML-TAG" in out
    assert "Traceback" not in out
    assert not marker.exists(), "a YAML tag ran a command"
    assert ran == []


def test_an_unsafe_tag_on_a_key_is_reported_once(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "PWNED"
    text = XOR.replace(
        "  batch_size: 32\n", f'  batch_size: 32\n  ? !!python/object/apply:os.system ["touch {marker}"]\n  : 1\n', 1
    )
    assert diagnostics(text) == [("E-YAML-TAG", 10, 5)]
    assert not marker.exists()


@pytest.fixture
def fenced_yaml(monkeypatch: pytest.MonkeyPatch):
    """PyYAML's unsafe entry points raise (and are recorded, should something catch the error);
    yaml.load is allowed with a safe loader only."""
    real_load = yaml.load
    safe = (yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    calls: list[str] = []

    def guarded_load(stream, Loader=None, **kw):
        if not (isinstance(Loader, type) and issubclass(Loader, safe)):
            calls.append(f"yaml.load(Loader={Loader!r})")
            raise AssertionError(calls[-1])
        return real_load(stream, Loader, **kw)

    def refuse(name: str):
        def _raise(*a, **k):
            calls.append(name)
            raise AssertionError(f"yaml.{name} was called")

        return _raise

    monkeypatch.setattr(yaml, "load", guarded_load)
    for name in ("unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"):
        monkeypatch.setattr(yaml, name, refuse(name))
    for cls in (yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader):
        monkeypatch.setattr(cls, "__init__", refuse(f"{cls.__name__}()"))
    return calls


@pytest.mark.parametrize("path", EXAMPLES + CORPUS, ids=lambda p: p.stem)
def test_the_loader_never_uses_an_unsafe_yaml_loader(path: pathlib.Path, fenced_yaml: list[str]) -> None:
    compiled, report = compile_file(path, example_overrides(path))  # a teacher for distill_digits
    assert fenced_yaml == []
    if path in EXAMPLES:
        assert compiled is not None, report.render()


# ---------------------------------------------------------------- expressions are never evaluated


@pytest.fixture
def fenced_builtins(monkeypatch: pytest.MonkeyPatch):
    """eval and exec raise; compile may only build an AST (ast.parse calls it with PyCF_ONLY_AST)."""
    real_compile = builtins.compile
    calls: list[str] = []

    def guarded_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError(f"compile() to code: {source!r}")
        calls.append(str(source))
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def refuse(name: str):
        def _raise(*a, **k):
            raise AssertionError(f"{name}() was called with {a!r}")

        return _raise

    monkeypatch.setattr(builtins, "eval", refuse("eval"))
    monkeypatch.setattr(builtins, "exec", refuse("exec"))
    monkeypatch.setattr(builtins, "compile", guarded_compile)
    return calls


@pytest.mark.parametrize("path", EXAMPLES + CORPUS, ids=lambda p: p.stem)
def test_expressions_never_reach_eval_exec_or_compile(path: pathlib.Path, fenced_builtins: list[str]) -> None:
    compiled, report = compile_file(path, example_overrides(path))  # a teacher for distill_digits
    if path in EXAMPLES:
        assert compiled is not None, report.render()
        assert fenced_builtins, "the expressions are parsed with ast.parse (compile to an AST only)"
    code, out = validate_cli(path)
    assert code in (0, 2) and "Traceback" not in out


def test_the_fence_itself_works(fenced_builtins: list[str]) -> None:
    with pytest.raises(AssertionError):
        builtins.eval("1")
    with pytest.raises(AssertionError):
        builtins.compile("1", "<x>", "eval")


# ---------------------------------------------------------------- refused constructs name themselves

REFUSED = [
    # expression, code, the text the caret starts at, a word of the message
    ("x.__class__", "E-EXPR", "x.__class__", "attribute access"),
    ("x.__class__.__bases__[0].__subclasses__()", "E-EXPR", "x.__class__", "only named functions"),
    ("__import__('os')", "E-NAME", "__import__", "unknown function '__import__'"),
    ("__import__('os').system('touch PWNED')", "E-EXPR", "__import__('os').system", "only named functions"),
    ("eval('1 + 1')", "E-NAME", "eval", "unknown function 'eval'"),
    ("exec('x = 1')", "E-NAME", "exec", "unknown function 'exec'"),
    ("open('/etc/passwd')", "E-NAME", "open", "unknown function 'open'"),
    ("getattr(x, '__class__')", "E-NAME", "getattr", "unknown function 'getattr'"),
    ("__builtins__", "E-NAME", "__builtins__", "unknown name '__builtins__'"),
    ("mean(__class__)", "E-NAME", "__class__", "unknown name '__class__'"),
    ("(lambda: x)()", "E-EXPR", "lambda: x", "only named functions"),
    ("lambda: x", "E-EXPR", "lambda: x", "lambda"),
    ("[v for v in x]", "E-EXPR", "[v for v in x]", "comprehension"),
    ("sum(v for v in x)", "E-EXPR", "(v for v in x)", "comprehension"),
    ("{k: x for k in x}", "E-EXPR", "{k: x for k in x}", "comprehension"),
    ("foo[0]", "E-NAME", "foo", "unknown name 'foo'"),
    ("x[y]", "E-EXPR", "y", "integer constants"),
    ("x[foo]", "E-EXPR", "foo", "integer constants"),
    ("x if y else x", "E-EXPR", "x if y else x", "where(c, a, b)"),
    ("x < y < x", "E-EXPR", "x < y < x", "chained comparisons"),
    ("'sum' in x", "E-EXPR", "'sum' in x", "the 'in' test is not allowed"),
    ("x not in y", "E-EXPR", "x not in y", "the 'in' test is not allowed"),
    ("x is y", "E-EXPR", "x is y", "the 'is' test is not allowed"),
    ("x + 'a'", "E-EXPR", "'a'", "strings"),
    ("f'{x}'", "E-EXPR", "f'{x}'", "f-strings"),
    ("(z := x)", "E-EXPR", "z := x", "':='"),
    ("mean(*x)", "E-EXPR", "*x", "*args"),
    ("mean(**x)", "E-EXPR", "x", "**kwargs"),
    ("x and y", "E-EXPR", "x and y", "'and'/'or'"),
    ("{1, 2}", "E-EXPR", "{1, 2}", "set literals"),
    ("x % 2", "E-EXPR", "x % 2", "Mod"),
    ("~x", "E-EXPR", "~x", "Invert"),
    ("await x", "E-EXPR", "await x", "'await'"),
]


@pytest.mark.parametrize(("expr", "code", "at", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_constructs_give_a_clear_message_at_their_column(expr: str, code: str, at: str, words: str) -> None:
    line_text = f"  probe: {yaml.safe_dump(expr, width=10**6).splitlines()[0]}"
    text = XOR.replace("  logits: net(x)\n", f"  logits: net(x)\n{line_text}\n", 1)
    _, report = compile_text(text, "spec.yaml", SPECS)
    probe = [d for d in report.items if d.path[:2] == ("nodes", "probe")]
    assert len(probe) == 1, report.render()
    (d,) = probe
    row = text.splitlines().index(line_text) + 1
    value_start = line_text.index(": ") + 2
    quoted = line_text[value_start] in "'\""
    column = value_start + (1 if quoted else 0) + expr.index(at) + 1
    assert (d.code, d.line, d.column) == (code, row, column), report.render()
    assert words in d.message, d.message


# ---------------------------------------------------------------- alias bombs, huge and deep input

BOMB = """\
version: 1
name: lol
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
inputs: {}
losses: {}
"""


def bounded(text: str, seconds: float = 5.0, megabytes: float = 100.0) -> list[tuple[str, int | None, int | None]]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        found = diagnostics(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < seconds
    assert peak < megabytes * 1e6, f"peak {peak / 1e6:.0f} MB"
    return found


def test_a_billion_laughs_alias_bomb_is_refused_quickly_with_a_location(tmp_path: pathlib.Path) -> None:
    # 9**9 = 387 million strings if the aliases were expanded
    found = bounded(BOMB)
    assert found == [("E-YAML", 7, 1)]  # the top-level key whose value passes the limit (e:)
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB, encoding="utf-8")
    code, out = validate_cli(spec)
    assert code == 2 and f"{spec}:7:1: E-YAML the document expands to more than" in out


def test_a_wide_alias_bomb_of_mappings_is_refused() -> None:
    text = "version: 1\nname: x\nbase: &m {" + ", ".join(f"k{i}: {i}" for i in range(300)) + "}\n"
    text += "copies: [" + ", ".join(["*m"] * 300) + "]\ninputs: {}\nlosses: {}\n"
    found = bounded(text)
    assert found == [("E-YAML", 4, 1)]


def test_a_recursive_alias_is_refused() -> None:
    found = bounded("version: 1\nname: x\nloop: &a [*a]\ninputs: {}\nlosses: {}\n")
    assert [code for code, _, _ in found] == ["E-YAML"] and found[0][1] == 3


def test_a_few_aliases_are_still_fine() -> None:
    text = XOR.replace(
        "  opt: {type: adam, lr: 0.05, params: [net]}",
        "  opt: {type: adam, lr: &lr 0.05, params: [net]}\n  opt2: {type: adam, lr: *lr, params: [net]}",
    )
    found = diagnostics(text)
    assert {code for code, _, _ in found} <= {"W-UNUSED"}, found


@pytest.mark.parametrize(
    ("what", "expr", "column"),
    [
        ("a 100k-character sum", "+".join(["x"] * 50_000), 11),  # nests too deeply to parse
        ("10000 nested parentheses", "(" * 10_000 + "x" + ")" * 10_000, 211),  # Python's limit: 200
        ("10000 nested brackets", "[" * 10_000 + "x" + "]" * 10_000, 211),
        ("2000 nested calls", "sum(" * 2000 + "x" + ")" * 2000, 814),
        ("100000 signs", "-" * 100_000 + "x", 11),
        ("a power tower", "x * 9 ** 9 ** 9 ** 9", 20),  # 9 ** (9 ** 9) overflows first
        ("a 5000-digit number", "x * " + "9" * 5000, 11),  # Python refuses to read it
        ("a number beyond float32", "x * 1e300", 15),
        ("a long flat call", "concat([" + ", ".join(["x"] * 5000) + "], axis=1)", None),  # valid
    ],
)
def test_huge_and_deep_expressions_end_in_a_located_diagnostic(what: str, expr: str, column: int | None) -> None:
    text = XOR.replace("  logits: net(x)\n", f"  logits: net(x)\n  probe: '{expr}'\n", 1)
    found = bounded(text, seconds=10)
    assert found == ([] if column is None else [("E-EXPR", 17, column)]), (what, found)


def test_deeply_nested_yaml_ends_in_a_located_diagnostic() -> None:
    # flow collections: PyYAML's scanner is quadratic in their depth (5000 levels took 30 s)
    for opener, closer, column in (("[", "]", 78), ("{a: ", "}", 270)):
        text = XOR.replace("name: xor\n", "name: xor\ndescription: " + opener * 5000 + "1" + closer * 5000 + "\n", 1)
        assert bounded(text, seconds=10) == [("E-YAML", 5, column)]
    # block collections: PyYAML's composer recursed into a RecursionError
    text = XOR.replace("name: xor\n", "name: xor\ndescription:\n" + "- " * 5000 + "1\n", 1)
    found = bounded(text, seconds=10)
    assert [(code, line) for code, line, _ in found] == [("E-YAML", 6)], found
    text = XOR.replace(
        "name: xor\n", "name: xor\ndescription:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), 1
    )
    found = bounded(text, seconds=10)
    assert [code for code, _, _ in found] == ["E-YAML"], found


def test_huge_layers_and_inputs_are_refused_before_numpy_allocates() -> None:
    text = XOR.replace("{linear: 8}", "{linear: 100000000}").replace("shape: [2]", "shape: [100000]")
    found = bounded(text, megabytes=50)
    assert found == [("E-SHAPE", 11, 14), ("E-MODULE", 14, 9)], found  # [100000] is not train.x's [2]


def test_a_long_scan_is_refused_before_it_unrolls() -> None:
    # each step of a scan is a copy of the cell in the static graph: 100000 steps would take minutes
    text = XOR.replace(
        "inputs:\n", "inputs:\n  seq: {shape: [100000, 1], from: noise.normal}\n  h: {shape: [4], from: noise.normal}\n"
    )
    text = text.replace("modules:\n", "modules:\n  cell: {cell: gru, hidden: 4}\n")
    text = text.replace("  logits: net(x)\n", "  logits: net(x)\n  hs: scan(cell, seq, h)\n")
    found = bounded(text, seconds=10)
    assert found == [("E-SHAPE", 20, 7)], found


# ---------------------------------------------------------------- gym environment ids


def test_an_environment_id_never_imports_a_python_module(tmp_path: pathlib.Path, monkeypatch) -> None:
    # gymnasium.make("module:Env-v0") imports `module` first: from a spec that would run its code
    pytest.importorskip("gymnasium")
    marker = tmp_path / "imported"
    (tmp_path / "payload_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        (CORPUS[0].parent / "gym_unknown_env.yaml").read_text().replace("CartPole-v9", "payload_mod:CartPole-v1")
    )
    code, out = validate_cli(spec)
    assert code == 2, out
    assert "E-DATA environment id 'payload_mod:CartPole-v1' contains ':'" in out, out
    assert not marker.exists()
