"""The package's import structure: no cycles, and each layer imports only from layers below it.

Layers, lowest first: pure building blocks (models, data, augment, losses, metrics, ...); the
machinery over them (inference, checkpoint, training); a trained run and what is done with it
(runs); the command lines. Read from the source (``ast``), so a new module is checked as soon as
it exists.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxseg")
COMMANDS = {"cli", "train", "predict", "evaluate", "export", "experiment"}
MACHINERY = {"inference", "checkpoint", "training"}


def modules() -> dict[str, str]:
    """``{dotted name: path}`` of every module under ``jaxseg/`` (a package by its name)."""
    found = {}
    for folder, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path[:-3], os.path.dirname(ROOT)).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imports(name: str) -> set[str]:
    """The jaxseg modules ``name`` imports, at any depth of its code (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    found = set()
    package = name if MODULES[name].endswith("__init__.py") else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(MODULES[name]).read())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # Relative: from the module's package, ``level - 1`` up.
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if not module.startswith("jaxseg"):
                continue
            for alias in node.names:
                dotted = f"{module}.{alias.name}"
                found.add(dotted if dotted in MODULES else module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jaxseg")}
    return found - {name}


def layer(name: str) -> int:
    """0 building blocks, 1 machinery, 2 runs, 3 command lines (the package root: -1)."""
    parts = name.split(".")
    if len(parts) == 1:
        return -1
    top = parts[1]
    if top in COMMANDS:
        return 3
    if top == "runs":
        return 2
    return 1 if top in MACHINERY else 0


def test_the_checker_sees_imports_and_layers():
    assert {"jaxseg.checkpoint", "jaxseg.training.setup"} <= imports("jaxseg.runs.loading")
    assert "jaxseg.errors" in imports("jaxseg.checkpoint.orbax_io")
    assert [layer(m) for m in ("jaxseg.models.unet", "jaxseg.training.loop", "jaxseg.runs")] == [
        0,
        1,
        2,
    ]
    assert layer("jaxseg.export") == 3


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_it(name):
    above = sorted(m for m in imports(name) if layer(m) > layer(name))
    assert not above, f"{name} (layer {layer(name)}) imports {above}"


def test_machinery_parts_stay_apart():
    """Checkpoint I/O knows nothing of training or inference; inference nothing of training."""
    for name in MODULES:
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ("checkpoint", "inference"):
            continue
        wrong = {
            m for m in imports(name) if m.split(".")[1:2] in ([p] for p in MACHINERY - {parts[1]})
        }
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_no_import_cycle():
    graph = {name: imports(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            if state.get(other) == "open":
                cycle = path[path.index(other) :] + [other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, path + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_over_300_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(open(path).readlines())) > 300}
    assert not long, f"split these: {long}"
