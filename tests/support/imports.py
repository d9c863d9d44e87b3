"""The import graph of Python packages, read as text (ast): nothing of the code under study runs.

    graph = ImportGraph.of(Path("server/tunewire_server"), Path("client/tunewire"))
    graph.cycles(lambda m: m.startswith("tunewire_server."))   # [["a", "b", "a"], ...]
    graph.reach("tunewire_server.jobs.manager")                # {"torch": ["...manager", "...x", "torch"]}

What counts as an import of module M: every `import`/`from ... import` statement anywhere in M's file, at
module level or inside a function or class (a lazy import runs as soon as that function does), except the
ones under `if TYPE_CHECKING:` (they never run; type checkers alone read them). Relative imports are
resolved against M's package. Not seen: imports by computed name (importlib.import_module(f"...")), such as
validation/__init__'s lazy attributes; each module they load is still checked on its own.

The same idea as /work/shared/tools/import_cycles.py, copied here because tests run on clones where
/work/shared is absent; this version also resolves relative imports, skips TYPE_CHECKING blocks, knows
which targets are modules, and records the outside (third-party) packages each module names.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Module:
    """One module of a studied package: its file, the modules of the graph it imports (`internal`, dotted
    names as written; filtered to known modules by ImportGraph) and the top-level names of outside
    packages it imports (`external`, e.g. "torch")."""

    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    internal: set[str] = field(default_factory=set)
    external: set[str] = field(default_factory=set)


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """The dotted name of `path` inside the package folder `root`, and whether it is a package __init__."""
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement of `tree`, in functions and classes too, except the body of an
    `if TYPE_CHECKING:` (its `else:` branch runs, so it counts)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module named by a (possibly relative) `from` import inside module `name`."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    if not is_package:
        base = base[:-1]  # a plain module's `.` is its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


class ImportGraph:
    """Modules of one or more package folders and the imports among them."""

    def __init__(self, modules: dict[str, Module]) -> None:
        self.modules = modules
        for mod in modules.values():
            self._read(mod)

    @classmethod
    def of(cls, *roots: Path) -> ImportGraph:
        """Parse every .py file under each package folder in `roots`."""
        modules: dict[str, Module] = {}
        for root in roots:
            for path in sorted(root.rglob("*.py")):
                name, is_package = module_name(root, path)
                modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
        return cls(modules)

    def _read(self, mod: Module) -> None:
        for node in import_statements(mod.tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(node, mod.name, mod.is_package)
                # `from pkg import x`: x is the submodule pkg.x when there is one, else a name from pkg's
                # __init__ (then pkg itself is what is imported).
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in self.modules]
                targets = subs if len(subs) == len(node.names) else [*subs, base]
            for target in targets:
                if target in self.modules or target.split(".")[0] in self._roots:
                    mod.internal.add(target)
                elif target:
                    mod.external.add(target.split(".")[0])

    @property
    def _roots(self) -> set[str]:
        return {name.split(".")[0] for name in self.modules}

    def edges(self, name: str, *, with_parents: bool = False) -> set[str]:
        """Modules of the graph that `name` imports. with_parents: also the packages above each target, whose
        __init__ Python runs first (what really executes; not used for cycles, where a module naming its own
        package is the normal way a package is built)."""
        out = set()
        for target in self.modules[name].internal:
            parts = target.split(".")
            stop = 1 if with_parents else len(parts)
            for i in range(len(parts), stop - 1, -1):
                candidate = ".".join(parts[:i])
                if candidate in self.modules and candidate != name:
                    out.add(candidate)
        return out

    def cycles(self, within: Callable[[str], bool]) -> list[list[str]]:
        """Import cycles among the modules `within` selects, each as [a, b, ..., a]; one per strongly
        connected group of modules (the first cycle a depth-first walk meets in it)."""
        nodes = sorted(m for m in self.modules if within(m))
        graph = {m: sorted(d for d in self.edges(m) if within(d) and not m.startswith(d + ".")) for m in nodes}
        found: list[list[str]] = []
        done: set[str] = set()
        stack: list[str] = []

        def visit(m: str) -> None:
            if m in stack:
                cycle = stack[stack.index(m):] + [m]
                if not any(set(cycle) & set(c) for c in found):
                    found.append(cycle)
                return
            if m in done:
                return
            stack.append(m)
            for d in graph[m]:
                visit(d)
            stack.pop()
            done.add(m)

        for start in nodes:
            visit(start)
        return found

    def reach(self, start: str, follow: Callable[[str], bool] = lambda m: True,
              skip: Collection[tuple[str, str]] = ()) -> dict[str, list[str]]:
        """Everything `start` imports when it runs, directly or through other modules of the graph (packages'
        __init__ included), as {target: shortest import chain from start}. Targets are modules of the graph
        and top-level outside packages. Modules `follow` rejects are reported but not walked into; the edges
        (importer, imported) in `skip` are not walked at all."""
        chains: dict[str, list[str]] = {start: [start]}
        queue = deque([start])
        while queue:
            m = queue.popleft()
            if m != start and not follow(m):
                continue
            for ext in sorted(self.modules[m].external):
                chains.setdefault(ext, [*chains[m], ext])
            for d in sorted(self.edges(m, with_parents=True)):
                if d not in chains and (m, d) not in skip:
                    chains[d] = [*chains[m], d]
                    queue.append(d)
        del chains[start]
        return chains


def imported_modules(path: Path) -> set[str]:
    """The absolute dotted names a file imports (TYPE_CHECKING blocks aside); `from a import b` gives both
    a and a.b, since b may be a module. Relative imports are left out (test files do not use them)."""
    names: set[str] = set()
    for node in import_statements(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def has_logic(tree: ast.Module) -> bool:
    """Whether a module holds logic: a function at module level, or a class with at least one method.
    Constants, re-exports, enums and method-less dataclasses (data shapes) do not count."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return True
        if isinstance(node, ast.ClassDef) and any(
                isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body):
            return True
    return False
