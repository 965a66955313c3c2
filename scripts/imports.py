#!/usr/bin/env python3
"""Prints the module import graph of the two crates and the circles in it.

A module is a top-level file or directory under `src/` (crate `acr`) or `plugins/src/`
(crate `acr-plugins`): `plugins/src/store/flight.rs` belongs to `plugins::store`. An edge
A -> B is a `use crate::B`, a `crate::B::` path, or (from `src/`) an `acr_plugins::B`
reference in a file of A. A name the crate root re-exports (`crate::Context`, from
`pub use context::{Context, Host}` in lib.rs) counts as its module; what lib.rs defines
itself (`PluginError`) is the module `(root)`, whose edges are the names its own code uses.
Comments are skipped; `mod` lines and main.rs are not edges.

Usage: scripts/imports.py [--without MOD,MOD...] [REPO]   (exit 1 when a circle is found)

`--without plugins::catalogue` leaves those modules out of the circle search (the graph is
still printed whole), to see which circles remain once they are untangled.
"""

import re
import sys
from pathlib import Path

CRATES = [("plugins", "plugins/src"), ("acr", "src")]
ROOTS = {"lib", "main"}


def module_of(root: Path, file: Path) -> str:
    first = file.relative_to(root).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def uses(text: str, prefix: str) -> set:
    """Modules named after `prefix::`, also inside `use prefix::{a, b::c}` groups."""
    found = set()
    for m in re.finditer(rf"\b{prefix}::(\{{[^;]*?\}}|\w+)", text, flags=re.S):
        item = m.group(1)
        if item.startswith("{"):
            # only the first path segment of each member of the group
            depth, part, parts = 0, "", []
            for ch in item[1:-1]:
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    parts.append(part)
                    part = ""
                else:
                    part += ch
            parts.append(part)
            for p in parts:
                name = p.strip().split("::")[0].strip()
                if re.fullmatch(r"\w+", name):
                    found.add(name)
        else:
            found.add(item)
    return found


def reexports(root: Path) -> dict:
    """`pub use module::{A, B}` in the crate root: name -> module."""
    lib = root / "lib.rs"
    table = {}
    if not lib.exists():
        return table
    text = strip_comments(lib.read_text())
    for m in re.finditer(r"pub use (\w+)::(\{[^;]*?\}|\w+);", text, flags=re.S):
        names = m.group(2).strip("{}").split(",")
        for n in names:
            n = n.strip().split(" as ")[-1].strip()
            if n:
                table[n] = m.group(1)
    return table


def resolve(name: str, modules: set, table: dict):
    if name in modules and name not in ROOTS:
        return name
    if name in table:
        return table[name]
    if re.fullmatch(r"[A-Z]\w*", name) or name[0].islower():
        return "(root)"
    return None


def graph(repo: Path) -> dict:
    edges = {}
    plugin_modules = {module_of(repo / "plugins/src", f) for f in (repo / "plugins/src").rglob("*.rs")}
    plugin_table = reexports(repo / "plugins/src")
    for crate, rel in CRATES:
        root = repo / rel
        modules = {module_of(root, f) for f in root.rglob("*.rs")}
        table = reexports(root)
        for f in sorted(root.rglob("*.rs")):
            src = module_of(root, f)
            if src == "main":
                continue
            text = strip_comments(f.read_text())
            if src == "lib":
                src = "(root)"
                # its own code: not the module list, not the re-exports
                body = "\n".join(
                    l for l in text.splitlines()
                    if not re.match(r"\s*(pub )?(mod|use) ", l)
                )
                refs = {table[n] for n in table if re.search(rf"\b{n}\b", body)}
                text = body
            else:
                refs = set()
            a = f"{crate}::{src}"
            refs |= {resolve(d, modules, table) for d in uses(text, "crate")}
            for dep in refs:
                if dep and dep != src:
                    edges.setdefault(a, set()).add(f"{crate}::{dep}")
            if crate == "acr":
                for dep in uses(text, "acr_plugins"):
                    dep = resolve(dep, plugin_modules, plugin_table)
                    if dep:
                        edges.setdefault(a, set()).add(f"plugins::{dep}")
            edges.setdefault(a, set())
    return edges


def circles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    args = sys.argv[1:]
    without = set()
    if args[:1] == ["--without"] and len(args) > 1:
        without = set(args[1].split(","))
        args = args[2:]
    repo = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    edges = graph(repo)
    print("# module import graph (A -> modules A uses)")
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a])) or '(nothing)'}")
    kept = {a: {b for b in bs if b not in without} for a, bs in edges.items() if a not in without}
    found = circles(kept)
    print()
    if without:
        print(f"(circles searched without {', '.join(sorted(without))})")
    if not found:
        print("no circle")
        return 0
    print(f"{len(found)} circle(s):")
    for comp in found:
        print("  " + " <-> ".join(comp))
    return 1


if __name__ == "__main__":
    sys.exit(main())
