"""The import graph between the project's layers: which package reaches which (with one chain as an
example), and any cycle between the core's modules. `make graph`; `lint-imports` enforces the layers."""
import sys

import grimp

pkgs = ["evomath", "training", "evaluation", "evolution", "tasks", "flows", "deployments"] + sys.argv[1:]
pkgs = [p for p in dict.fromkeys(pkgs) if __import__("importlib").util.find_spec(p)]
g = grimp.build_graph(*pkgs)
edges = {}
for p in pkgs:
    for q in pkgs:
        if p != q:
            chains = g.find_shortest_chains(importer=p, imported=q, as_packages=True)
            if chains:
                edges[(p, q)] = sorted(chains)[0]
for (p, q), chain in sorted(edges.items()):
    print(f"{p:12s} -> {q:12s} e.g. {' -> '.join(chain)}")
core = sorted(m for m in g.modules if m.startswith("evomath.") and m.count(".") == 1)
cycles = set()
for a in core:
    for b in core:
        if a < b and g.chain_exists(a, b, as_packages=True) and g.chain_exists(b, a, as_packages=True):
            cycles.add((a, b))
print("core cycles:", ", ".join(f"{a} <-> {b}" for a, b in sorted(cycles)) or "none")
