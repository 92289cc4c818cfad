#!/usr/bin/env python3
"""Reports import cycles between the modules of a Rust crate.

Usage: tools/module-cycles.py CRATE_SRC_DIR [CRATE_SRC_DIR ...]
Exit status 1 when a cycle exists (or a directory has no lib.rs), 0 otherwise.

The rule (../shared/DESIGN.md, issue 14 section 2a): inside a crate, imports
point one way. Every `crate::a::b`, `super::x` and `self::x` path in a module's
files is resolved to the module it names; an edge A -> B between two modules is
lifted to the pair of *sibling* modules under their common parent (so
`authn::jwt -> server::error` counts as `authn -> server`), and any strongly
connected set of siblings is a cycle. Test code (files named `tests.rs` or
under a `tests/` folder, and everything after `#[cfg(test)]` in a file) is not
counted: tests may look anywhere.

Names re-exported at a module's root (`pub use x::{A, B}` in lib.rs or mod.rs)
are resolved to the module that defines them, so `crate::Authority` counts as
`crate::authority`.
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
REEXPORT_RE = re.compile(r"\bpub\s+use\s+([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))\s*;")


def module_of(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def is_test_file(src: Path, file: Path) -> bool:
    parts = file.relative_to(src).parts
    return file.name == "tests.rs" or "tests" in parts[:-1]


def strip_tests(text: str) -> str:
    # Everything after the first `#[cfg(test)]` is test code (house style puts
    # the test module last).
    idx = text.find("#[cfg(test)]")
    text = text if idx < 0 else text[:idx]
    # Drop comments and doc comments.
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text


def collect(src: Path):
    files = [f for f in src.rglob("*.rs") if not is_test_file(src, f)]
    modules = {module_of(src, f) for f in files}
    texts = {f: strip_tests(f.read_text(encoding="utf-8")) for f in files}
    # Re-exported names at each module root: (module, name) -> defining module.
    reexports = {}
    for f, text in texts.items():
        if f.name not in ("lib.rs", "mod.rs", "main.rs"):
            continue
        here = module_of(src, f)
        for m in REEXPORT_RE.finditer(text):
            target = here + (m.group(1),) + tuple(p for p in m.group(2).split("::") if p)
            names = [n.strip() for n in (m.group(3) or m.group(4) or "").split(",")]
            for n in names:
                n = n.split(" as ")[-1].strip()
                if n:
                    reexports[(here, n)] = target
    return files, modules, texts, reexports


def resolve(base: tuple, segments: list, modules: set, reexports: dict) -> tuple:
    path = base
    for seg in segments:
        if path + (seg,) in modules:
            path = path + (seg,)
        elif (path, seg) in reexports:
            target = reexports[(path, seg)]
            while target not in modules and target:
                target = target[:-1]
            return target
        else:
            break
    return path


def edges_of(src: Path):
    files, modules, texts, reexports = collect(src)
    edges = set()
    for f in files:
        here = module_of(src, f)
        text = texts[f]
        # A file's `super` is its module's parent (a plain file `a/b.rs` is
        # module a::b, its super is a).
        refs = []
        for m in PATH_RE.finditer(text):
            refs.append((m.group(1), [p for p in m.group(2).split("::") if p]))
        for m in USE_GROUP_RE.finditer(text):
            prefix = [p for p in m.group(2).split("::") if p]
            for item in re.split(r",(?![^{]*\})", m.group(3)):
                first = item.strip().split("::")[0].split(" as ")[0].strip("{} \n")
                if first and first != "self":
                    refs.append((m.group(1), prefix + [first]))
        for kind, segs in refs:
            if kind == "crate":
                base = ()
            elif kind == "self":
                base = here
            else:
                base = here[:-1]
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
            target = resolve(base, segs, modules, reexports)
            if target != here:
                edges.add((here, target))
    return modules, edges


def sibling_edge(a: tuple, b: tuple):
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if i == len(a) or i == len(b):
        return None  # one contains the other: parent/child, not siblings
    return (a[: i + 1], b[: i + 1])


def cycles(edges):
    graph = {}
    for a, b in edges:
        e = sibling_edge(a, b)
        if e:
            graph.setdefault(e[0], set()).add(e[1])
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out, graph


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    status = 0
    for d in argv[1:]:
        src = Path(d)
        if not (src / "lib.rs").exists() and not (src / "main.rs").exists():
            print(f"{src}: no lib.rs or main.rs")
            status = 1
            continue
        _, edges = edges_of(src)
        found, graph = cycles(edges)
        if found:
            status = 1
            for comp in found:
                names = ["::".join(m) or "crate" for m in comp]
                print(f"{src}: module cycle: {' <-> '.join(names)}")
                for a in comp:
                    for b in sorted(graph.get(a, ())):
                        if b in comp:
                            print(f"    {'::'.join(a)} -> {'::'.join(b)}")
        else:
            print(f"{src}: no module cycles")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
