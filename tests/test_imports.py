"""The core imports no heavy toolkit: ART, Captum, scikit-learn/-image, torchvision stay out."""
import subprocess
import sys

HEAVY = ("art", "captum", "sklearn", "skimage", "torchvision", "pandas")

SCRIPT = """
import sys, os
os.environ["ADVINTERP_DISABLE_PLUGINS"] = ",".join(
    ep.name for ep in __import__("importlib.metadata").metadata.entry_points(group="advinterp"))
import advinterp, advinterp.testing, advinterp.datasets.broden, advinterp.datasets.cub
import advinterp.datasets.imagenet, advinterp.viz, advinterp.cli, advinterp.demo
advinterp.list_components()
from advinterp.testing import toy_model, toy_batch
m = toy_model(); b = toy_batch(m)
advinterp.get_analyzer("activation_distance").analyze(m, b)
print(",".join(sorted(k for k in {heavy} if k in sys.modules)))
"""


def test_core_imports_no_heavy_toolkit():
    code = SCRIPT.format(heavy=repr(set(HEAVY)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the core imported: {r.stdout.strip()}"


def _imports(path):
    """``(line, module, names)`` of every ``from advinterp... import`` in a file (ast)."""
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "advinterp":
            yield node.lineno, node.module, [a.name for a in node.names]


def test_shipped_plugins_use_only_the_public_plugin_api():
    """What the shipped plugins use is what a third party may use: ``advinterp``,
    ``advinterp.api``, the data formats (``advinterp.datasets.*``) and ``advinterp.testing`` --
    and no private (underscore) name from them."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted(root.glob("plugins/*/advinterp_*/*.py")) + sorted(root.glob("examples/custom_plugin/*/*.py"))
    assert len(files) > 10
    public = ("advinterp", "advinterp.api", "advinterp.testing")
    bad = [f"{f.relative_to(root)}:{line}: from {mod} import {', '.join(names)}"
           for f in files for line, mod, names in _imports(f)
           if not (mod in public or mod.startswith("advinterp.datasets.")) or any(n.startswith("_") for n in names)]
    assert not bad, "plugins reach into the core's internals:\n" + "\n".join(bad)


def _core_graph():
    """``{module: modules of the core it imports}``, lazy (function-level) imports included,
    ``if TYPE_CHECKING:`` blocks and imports of a package's own ``__init__`` (re-exports)
    left out."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "advinterp"
    graph = {}
    for f in root.rglob("*.py"):
        mod = ".".join(("advinterp",) + f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(f.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
                for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                deps.add(target)
                deps |= {f"{target}.{a.name}" for a in node.names}
        graph[mod] = deps
    plugin_deps = {m: {d for d in ds if d.startswith("advinterp_")} for m, ds in graph.items()}
    packages = {m for m in graph if (root / Path(*m.split(".")[1:]) / "__init__.py").exists() or m == "advinterp"}
    core = {m: {d for d in ds if d in graph and d != m and d not in packages} for m, ds in graph.items()}
    return {m: core[m] | plugin_deps[m] for m in graph}, packages


def test_the_core_imports_no_plugin_and_has_no_import_cycle():
    graph, _ = _core_graph()
    plugin_imports = [m for m, ds in graph.items() for d in ds if d.startswith("advinterp_")]
    assert not plugin_imports, f"the core imports a plugin: {plugin_imports}"
    # strongly connected components with more than one module are import cycles
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v] & set(graph):
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles in the core: {cycles}"
