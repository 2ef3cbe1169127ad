#!/usr/bin/env python3
"""module-cycles.py [CRATE_SRC_DIR...] -- fail if the top-level modules of a crate depend on each other in a circle.

A module's dependencies are the `crate::<module>` paths its files name (in `use`
lines and in code). The checker reads every crates/*/src by default, builds the
graph of each crate's top-level modules (lib.rs and main.rs count as the crate
root, not as a module) and prints every cycle it finds; exit status 1 if any.
Dependencies on the crate root (`crate::Config`, re-exports) are ignored: the
root only wires.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)\b")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}")


def top_module(src: pathlib.Path, file: pathlib.Path):
    parts = file.relative_to(src).parts
    if len(parts) == 1:
        name = parts[0][:-3]
        return None if name in ("lib", "main") else name
    return None if parts[0] == "bin" else parts[0]


def graph_of(src: pathlib.Path):
    modules = {}
    for file in sorted(src.rglob("*.rs")):
        module = top_module(src, file)
        if module is None:
            continue
        text = file.read_text()
        names = set(PATH.findall(text))
        for group in GROUP.findall(text):
            names.update(re.findall(r"^\s*([a-z_][a-z0-9_]*)\s*(?:::|,|$)", group, re.M))
        modules.setdefault(module, set()).update(names)
    known = set(modules)
    return {m: {d for d in deps if d in known and d != m} for m, deps in modules.items()}


def cycles(graph):
    found, stack, on_stack, seen = [], [], set(), set()

    def visit(node):
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep in on_stack:
                cycle = stack[stack.index(dep):] + [dep]
                if sorted(cycle[:-1]) not in [sorted(c[:-1]) for c in found]:
                    found.append(cycle)
            elif dep not in seen:
                visit(dep)
        stack.pop()
        on_stack.discard(node)

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    return found


def main():
    dirs = [pathlib.Path(d) for d in sys.argv[1:]] or sorted(ROOT.glob("crates/*/src"))
    failed = False
    for src in dirs:
        for cycle in cycles(graph_of(src)):
            failed = True
            print(f"{src.parent.name}: module cycle {' -> '.join(cycle)}")
    if not failed:
        print(f"no module cycles in {', '.join(d.parent.name for d in dirs)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
