"""The twelve longest functions of the project's packages, in lines (docstrings included): `make graph`."""
import ast
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
rows = []
for pkg in ["evomath", "training", "evaluation", "tasks", "flows", "deployments", "evolution"]:
    for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).exists() else []:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
for n, where in sorted(rows, reverse=True)[:12]:
    print(f"{n:4d}  {where}")
