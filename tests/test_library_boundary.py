"""What `import nfsd_core` loads: the library, not the digits prior's training or benchmark code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAINING_AND_BENCHMARK = ("nfsd_core.priors.training", "nfsd_core.digits.training", "nfsd_core.digits.evaluator",
                          "nfsd_core.digits.metrics", "nfsd_core.digits.comparison", "nfsd_core.digits.data",
                          "nfsd_core.shapes.render", "nfsd_core.shapes.data", "nfsd_core.shapes.training",
                          "nfsd_core.shapes.evaluator", "nfsd_core.cli", "sklearn")


def loaded_modules(statement: str) -> set[str]:
    script = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_importing_the_library_loads_no_training_benchmark_or_cli_code():
    modules = loaded_modules("import nfsd_core")
    assert "nfsd_core.digits.prior" in modules  # the shipped prior's loader is part of the library
    assert not modules & set(TRAINING_AND_BENCHMARK)


def test_the_library_has_no_import_cycles():
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "nfsd_core").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                imported |= {f"{target}.{alias.name}" for alias in node.names} | {target}
        graph[module] = imported
    graph = {module: {name for name in imported if name in graph and name != module}
             for module, imported in graph.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    return path + [start]
                if nxt not in path and len(path) < len(graph):
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = {tuple(c) for c in map(cycle_from, graph) if c is not None}
    assert not cycles, f"import cycles: {sorted(cycles)}"
