"""Checks of the code's shape that need no server: no import cycles, an access rule per method,
no per-process state in module globals.

The import graph is grimp's (the library import-linter uses), with imports inside functions
counted like the others: a cycle hidden in a function still makes two modules one unit that
cannot be understood, tested or replaced alone. The layer contracts in pyproject.toml keep the
packages in order; this keeps the modules within a package from depending on each other in a
circle (a registry that its handler modules import while it imports them, a CLI module and its
helpers calling each other).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

import pandawms
from pandawms.api import authz, legacy, v1
from pandawms.api.legacy.registry import LegacyCalls
from pandawms.api.v1.registry import V1Module, build_table
from pandawms.model.errors import Forbidden
from pandawms.model.identity import Identity


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of two modules or more.

    Tarjan's algorithm, iterative so that a deep import chain cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("pandawms", cache_dir=None)
    cycles = strongly_connected(graph)
    assert not cycles, "modules that import each other (directly or in a circle):\n" + "\n".join(
        "  " + " <-> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z", "a.w"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    graph.add_import(importer="a.w", imported="a.x")
    assert strongly_connected(graph) == [["a.x", "a.y", "a.z"]]


def test_every_method_has_an_access_rule() -> None:
    """Every registry: the v1 table, the legacy thread methods and the legacy event-loop methods
    (getJob, updateJob) alike; a rule is declared with its method, never defaulted."""
    missing = [f"{m}/{n}" for (m, n), method in v1.METHODS.items() if method.rule is authz.NO_RULE]
    legacy_names = {*legacy.METHODS, *legacy.ASYNC_METHODS}
    missing += [name for name in legacy_names if legacy.RULES.get(name, authz.NO_RULE) is authz.NO_RULE]
    assert not missing, f"methods without an access rule: {missing}"
    assert set(legacy.RULES) == legacy_names
    assert {"getJob", "updateJob", "updateJobsInBulk"} <= set(legacy.ASYNC_METHODS)


def test_a_method_without_a_rule_is_refused_whoever_calls() -> None:
    manager = Identity(
        dn="/CN=Op", roles=frozenset({"manager", "production", "pilot", "user"}), method="x509"
    )
    with pytest.raises(Forbidden, match="no access rule"):
        authz.check(authz.NO_RULE, manager, "job/unruled")
    authz.check(v1.METHODS[("job", "set_command")].rule, manager, "job/set_command")


def test_the_tables_hold_the_listed_modules_and_refuse_a_name_twice() -> None:
    assert {module.name for module in v1.MODULES} == {m for (m, _) in v1.METHODS}
    assert len(v1.METHODS) == sum(len(module.methods) for module in v1.MODULES)
    assert v1.METHODS[("pilot", "update_job")].on_loop and not v1.METHODS[("job", "kill")].on_loop
    assert set(legacy.ASYNC_METHODS) >= {"getJob", "updateJob", "updateJobsInBulk", "isAlive"}

    job = V1Module("job")
    job.get("one", authz.USER)(lambda ctx: (True, "", None))
    with pytest.raises(ValueError, match="twice"):
        job.post("one", authz.USER)(lambda ctx: (True, "", None))
    again = V1Module("job")
    again.get("one", authz.USER)(lambda ctx: (True, "", None))
    with pytest.raises(ValueError, match="twice"):
        build_table([job, again])
    calls = LegacyCalls()
    calls.method("getThing", authz.PILOT)(lambda ctx, params: legacy.Reply({}))
    with pytest.raises(ValueError, match="twice"):
        calls.method("getThing", authz.PILOT)(lambda ctx, params: legacy.Reply({}))


#: Modules that may import pandawms modules inside functions, and why: the command line loads
#: only what the chosen subcommand needs (``pandawms jobs`` must not import the HTTP server);
#: the httpd master imports a worker's or the daemon's code only in the child that runs it; the
#: DDM factory imports the Rucio implementation only when Rucio is configured (rucio-clients is
#: an optional extra).
LAZY_IMPORTS_ALLOWED = {
    "cli.py",
    "monitor/cli.py",
    "monitor/cli_ops.py",
    "deploy/render.py",
    "deploy/configcmd.py",
    "httpd/master.py",
    "ddm/__init__.py",
}


def test_no_import_hides_in_a_function() -> None:
    """An import inside a function is either for start-up cost (the list above) or a cycle being
    dodged; the second kind is not allowed back."""
    root = Path(pandawms.__file__).parent
    hidden: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in LAZY_IMPORTS_ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("pandawms"):
                        hidden.append(f"{rel}:{inner.lineno} {inner.module}")
                    elif isinstance(inner, ast.Import) and any(
                        a.name.startswith("pandawms") for a in inner.names
                    ):
                        hidden.append(f"{rel}:{inner.lineno}")
    assert not hidden, f"imports inside functions: {hidden}"


#: Module globals that hold mutable state on purpose, and why that is not per-runtime state.
STATE_ALLOWED: dict[str, str] = {
    "pandawms.core.jobs.heartbeat._HEARTBEAT_STATEMENTS": "SQL built from column names: no data, one per shape",
    "pandawms.core.jobs.transitions._MOVE_EACH": "SQL built from column names: no data, at most 64 shapes",
    "pandawms.db.engine._COUNTS": "weakly keyed by the engine itself: lives and dies with its runtime's engine",
    "pandawms.logsetup._handlers": "the process's log files: logging is process-wide",
    "pandawms.monitor.web._STATIC": "files shipped in the package: the same for every runtime",
}
_MUTABLE_CALLS = {
    "dict",
    "list",
    "set",
    "defaultdict",
    "OrderedDict",
    "deque",
    "Counter",
    "WeakKeyDictionary",
    "WeakValueDictionary",
    "WeakSet",
    "local",
}
_CACHE_DECORATORS = {"cache", "lru_cache"}


def _name(node: ast.expr) -> str:
    """The last name of ``f``, ``mod.f``, or of a call ``f(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _holds_state(value: ast.expr) -> bool:
    """An empty container, or a cache, registry or group runner being made."""
    if isinstance(value, ast.Dict):
        return not value.keys
    if isinstance(value, ast.List | ast.Set):
        return not value.elts
    if isinstance(value, ast.Call):
        name = _name(value)
        return name in _MUTABLE_CALLS or name.endswith(("Cache", "Registry", "Runner"))
    return False


def module_state(root: Path, package: str) -> Iterator[tuple[str, str]]:
    """(module.name, what) for each module global that can hold state between requests.

    Module-level assignments of empty containers or of caches, functions memoised with
    ``functools.cache``/``lru_cache``, and ``global`` rebinding. Filled constants (a table of
    rules, a tuple of names) are not state and are not reported.
    """
    for path in sorted(root.rglob("*.py")):
        module = ".".join((package, *path.relative_to(root).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            if targets and _holds_state(value):
                for target in targets:
                    yield f"{module}.{ast.unparse(target)}", "a mutable global"
        for inner in ast.walk(tree):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                if any(_name(d) in _CACHE_DECORATORS for d in inner.decorator_list):
                    yield f"{module}.{inner.name}", "a memoised function"
            elif isinstance(inner, ast.Global):
                for name in inner.names:
                    yield f"{module}.{name}", "a global rebound by a function"


def test_no_per_process_state_in_module_globals() -> None:
    found = dict(module_state(Path(pandawms.__file__).parent, "pandawms"))
    unexpected = {name: what for name, what in found.items() if name not in STATE_ALLOWED}
    assert not unexpected, (
        "per-process state belongs on the Runtime (rt.cached / rt.kept / rt.remember), not in:\n"
        + "\n".join(f"  {name}: {what}" for name, what in sorted(unexpected.items()))
    )
    assert set(STATE_ALLOWED) <= set(found), f"allowed but gone: {set(STATE_ALLOWED) - set(found)}"


def test_the_state_finder_finds_state(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import functools\n"
        "RULES = {'a': 1}\n"
        "NAMES = ('a',)\n"
        "_cache: dict[str, int] = {}\n"
        "_seen = set()\n"
        "CACHE = TTLCache()\n"
        "_active = None\n"
        "@functools.lru_cache(maxsize=8)\n"
        "def parse(text): return text\n"
        "def configure():\n"
        "    global _active\n"
        "    _active = 1\n"
    )
    assert sorted(name for name, _ in module_state(tmp_path, "p")) == [
        "p.m.CACHE",
        "p.m._active",
        "p.m._cache",
        "p.m._seen",
        "p.m.parse",
    ]
