"""The architecture's boundaries: what `import nfsd_core` loads (the library, not the training or
benchmark code), no import cycles, and nodes that reach the core only through its public API."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]

TRAINING_AND_BENCHMARK = ("nfsd_core.priors.training", "nfsd_core.digits.training", "nfsd_core.digits.evaluator",
                          "nfsd_core.digits.metrics", "nfsd_core.digits.comparison", "nfsd_core.digits.data",
                          "nfsd_core.shapes.render", "nfsd_core.shapes.data", "nfsd_core.shapes.training",
                          "nfsd_core.shapes.evaluator", "nfsd_core.cli", "nfsd_core.batch", "sklearn")


def loaded_modules(statement: str) -> set[str]:
    script = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_importing_the_library_loads_no_training_benchmark_or_cli_code():
    modules = loaded_modules("import nfsd_core")
    assert "nfsd_core.digits.prior" in modules  # the shipped prior's loader is part of the library
    assert not modules & set(TRAINING_AND_BENCHMARK)


def test_a_shipped_priors_calibration_images_need_neither_diffusers_nor_training_code():
    """NFSD Demo Model fits its previews to them inside ComfyUI, where diffusers may be missing."""
    modules = loaded_modules("import nfsd_core; [p.calibration_images(2) for p in nfsd_core.SHIPPED_PRIORS.values()]")
    assert not modules & {"diffusers", "transformers", "sklearn", "nfsd_core.priors.training",
                          "nfsd_core.shapes.training"}


def test_nothing_but_the_batch_runner_imports_ray():
    """Ray is the optional `cluster` extra: the ComfyUI pack (its entry point, nodes and library) never
    imports it, and the command line only once a batch runs on Ray (`nfsd_core.batch.ray_runner`)."""
    importers = []
    for path in [ROOT / "__init__.py", *(ROOT / "nodes").rglob("*.py"), *(ROOT / "nfsd_core").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert sorted(set(importers)) == ["nfsd_core/batch/ray_runner.py"]
    modules = loaded_modules("import nfsd_core, nfsd_core.cli, nfsd_core.batch.jobs; nfsd_core.cli.build_parser()")
    assert "nfsd_core.batch.runner" in modules and not {name for name in modules if name.split(".")[0] == "ray"}


def module_level_statements(tree: ast.Module) -> Iterator[ast.stmt]:
    """The statements that run on import: the module's own, and those inside its top-level `if`
    and `try` blocks (not function bodies, whose imports are deferred on purpose)."""
    for statement in tree.body:
        yield statement
        if isinstance(statement, (ast.If, ast.Try)):
            yield from module_level_statements(ast.Module(body=statement.body + statement.orelse
                                                          + [s for h in getattr(statement, "handlers", [])
                                                             for s in h.body], type_ignores=[]))


def relative_imports(folder: str) -> dict[str, set[str]]:
    """module -> the modules and names it imports on import, for every module under `folder`, named
    from the repository root as ComfyUI loads it (`pack.nodes.optimizer`, `pack.nfsd_core.optimize`)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        module = ".".join(("pack",) + path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in module_level_statements(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                imported |= {f"{target}.{alias.name}" for alias in node.names} | {target}
        graph[module] = imported
    return graph


def test_the_library_and_the_nodes_have_no_import_cycles():
    graph = relative_imports("nfsd_core") | relative_imports("nodes")
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


def test_nodes_use_the_core_through_its_facades():
    """The nodes import nfsd_core's public API (`nfsd_core`, the NeRF's `nfsd_core.nerf` and the mesh
    texture's `nfsd_core.texture`), never a module behind it, so the core can rearrange its modules
    without breaking them."""
    facades = {"pack.nfsd_core", "pack.nfsd_core.nerf", "pack.nfsd_core.texture"}
    reaching_past = {module: sorted(name for name in imported if name.startswith("pack.nfsd_core.")
                                    and name.rpartition(".")[0] not in facades and name not in facades)
                     for module, imported in relative_imports("nodes").items()}
    assert not {module: names for module, names in reaching_past.items() if names}


def test_nodes_folder_holds_nodes_and_the_subpackages_none():
    """Each module directly in nodes/ (but the package and the shared schema parts) defines a
    ComfyUI node; the adapters, guards and socket values define none."""
    def defines_node(path: Path) -> bool:
        return any(isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "io.ComfyNode" for base in node.bases)
                   for node in ast.parse(path.read_text()).body)

    top = {path.name: defines_node(path) for path in (ROOT / "nodes").glob("*.py")}
    assert {name for name, has_node in top.items() if not has_node} == {"__init__.py", "schema.py"}
    nested = [path for path in (ROOT / "nodes").glob("*/*.py") if defines_node(path)]
    assert not nested and {path.parent.name for path in (ROOT / "nodes").glob("*/*.py")} == {
        "adapters", "guards", "sockets"}
