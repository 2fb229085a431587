"""The package's layout: no import circle among its modules, none of them over 400 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vae_jax"
MAX_LINES = 400


def module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
  """{module: the package modules it imports}, from the source (module-level and inside functions)."""
  modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vae_jax"):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          deps.add(full if full in modules else node.module)
      elif isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name in modules)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def test_no_module_imports_itself_through_others():
  graph = imports()
  # A package's __init__ re-exporting its own modules is not a circle between concerns.
  graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
  state, cycles = {}, []

  def visit(m, path):
    state[m] = "open"
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        cycles.append(path[path.index(d):] + [d])
      elif d not in state:
        visit(d, path + [d])
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, cycles
  assert "vae_jax.loop" in graph and graph["vae_jax.vq.train"] >= {"vae_jax.loop"}  # the graph is real


def test_every_module_owns_one_concern_in_at_most_400_lines():
  sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
  assert len(sizes) > 20
  assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
