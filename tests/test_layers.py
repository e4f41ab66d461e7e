"""The layers point one way: models <- engines <- stream <- (run_stream.py, export, training, benchmarks).

Every project module's imports are read with `ast`, those inside functions included (a lazy import
is still a dependency), and the test fails on an import that points up a layer or on a circle of
modules (inside a package too).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower number = lower layer; a module may import its own layer's and lower layers' modules.
LAYERS = {"models": 0, "engines": 1, "stream": 2,
          "run_stream": 3, "export": 3, "training": 3, "benchmarks": 3, "assets": 3}


def project_modules() -> dict[str, Path]:
    mods = {}
    for top in LAYERS:
        p = ROOT / f"{top}.py"
        files = [p] if p.exists() else sorted((ROOT / top).rglob("*.py"))
        for f in files:
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in it (module level, functions, try blocks)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()

    def resolve(name: str):
        # the longest known prefix: "engines.base.X" -> "engines.base"
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            cand = ".".join(parts[:i])
            if cand in known:
                return cand
        return None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" depends on pkg.sub; "from pkg import name" on pkg itself
            names = [f"{base}.{a.name}" for a in node.names]
        for n in names:
            r = resolve(n)
            if r is not None and r != module:
                found.add(r)
    return found


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    return {m: imports_of(p, m, known) for m, p in mods.items()}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def upward_imports(g) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in g.items() for b in deps if layer(b) > layer(a))


def circles(g) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "engines"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    f = pkg / "a.py"
    f.write_text("import os\n\ndef g():\n    from stream.x import y\n    from . import b\n    import models.spec\n")
    known = {"engines", "engines.a", "engines.b", "stream", "stream.x", "models", "models.spec"}
    assert imports_of(f, "engines.a", known) == {"stream.x", "engines.b", "models.spec"}


def test_checker_finds_upward_imports_and_circles():
    g = {"models.spec": {"engines.base"}, "engines.base": {"engines.select"}, "engines.select": {"engines.base"},
         "stream.x": {"models.spec"}}
    assert upward_imports(g) == ["models.spec -> engines.base"]
    assert circles(g) == [["engines.base", "engines.select"]]


def test_no_import_points_up_a_layer():
    assert upward_imports(graph()) == []


def test_no_circles_of_modules():
    assert circles(graph()) == []
