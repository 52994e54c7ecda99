"""The firmware's import graph, read from its source with ``ast``: no cycles, and the walls of
docs/architecture.md hold.

How the graph is made (every ``firmware/**/*.py``; ``main.py`` is ``main``, a package's ``__init__.py`` is
the package):
- An edge per ``import``/``from ... import`` statement anywhere in a module, at module level or inside a
  function (a function-level import is a dependency all the same, only a later one).
- ``import a.b`` is an edge to ``a.b``; ``from P import n`` an edge to ``P.n`` when that is a firmware
  module (``from mcagent import compat``), else to ``P`` (``from mcagent import ConfigError``: the
  package). The package ``__init__`` that Python runs before any of its submodules is not an edge: every
  submodule would otherwise depend on its package.
- Modules outside firmware/ (``os``, ``micropython``, ``machine``) are not part of the graph.
- A module named in a string (``compat.load("mcagent.httputil")``, ``compat.call_cold(...)``,
  ``compat.unload(...)``) is not an edge of the cycle check: that is the cold-code mechanism, a look-up
  by name at run time, when both modules are fully imported (``http`` loads its cold part ``httputil`` by
  name; ``httputil`` imports ``http``). The walls count these names too: a wall cannot be passed by
  naming a module in a string.

Walls: ``mcagent`` (the library) never reaches the app layer (``runtime``, ``sensors``, ``main``,
``boards``); ``sensors`` never reaches ``runtime``; the flash log and the wire format (``store*``,
``exchange*``, ``kind*``) never reach the network (``http*``, ``identity``, ``enroll``, ``upload*``);
``dsc`` never reaches ``identity``; only ``mcagent.compat`` reads ``sys.platform`` or ``sys.implementation``
(platform differences live in compat alone); compat.unload is the one unloader; mcagent's submodules never
import the package ``mcagent`` (its exception classes are in ``mcagent.errors``); ``httputil`` uses
Connection's buffer interface, not its ``_`` members.
"""

import ast
import os

UPY_SKIP = "a check of the firmware's source on the host (MicroPython has no ast module)"

FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "firmware")
_LOADERS = ("load", "call_cold", "unload")  # compat's functions that take a module name as a string


def _modules():
    """{module name: source path} of every firmware module."""
    out = {}
    for root, dirs, files in os.walk(FIRMWARE):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), FIRMWARE)[:-3].replace(os.sep, ".")
            if rel.endswith(".__init__"):
                rel = rel[: -len(".__init__")]
            out[rel] = os.path.join(root, f)
    return out


def _parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _imports(name, tree, known):
    """(target, line) of each import statement of module name that names a firmware module."""
    is_pkg = name in known and known[name].endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                for i in range(len(parts), 0, -1):  # the longest prefix that is a firmware module
                    target = ".".join(parts[:i])
                    if target in known:
                        out.append((target, node.lineno))
                        break
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = base + "." + a.name if base else a.name
                if sub in known:
                    out.append((sub, node.lineno))
                elif base in known:
                    out.append((base, node.lineno))
    return out


def _named_loads(tree, known):
    """(module, line) of each module a compat loader names in a string constant."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if fname not in _LOADERS:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.append((arg.value, node.lineno))
        elif isinstance(arg, ast.BinOp) and isinstance(arg.left, ast.Constant):  # "sensors." + kind
            out.append((str(arg.left.value).rstrip("."), node.lineno))
        elif "MODULES[" in ast.unparse(arg) or "ENCODERS[" in ast.unparse(arg):
            # a record kind's module (kinds.module, kinds.encoder): any of the registry's
            out.extend((m, node.lineno) for m in _kind_modules())
        elif fname != "unload" or ast.unparse(arg) not in ("name", "m", "module"):
            out.append(("<%s>" % ast.unparse(arg), node.lineno))  # unknown: test_loads_are_known fails
    return [(m, line) for m, line in out if m.split(".")[0] in {k.split(".")[0] for k in known}]


def _kind_modules():
    """The module names in mcagent/kinds.py's MODULES and ENCODERS (the record kinds' registry)."""
    tree = _parse(os.path.join(FIRMWARE, "mcagent", "kinds.py"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("MODULES", "ENCODERS"):
            names += [e.value for e in node.value.elts if e.value not in names]
    assert names, "mcagent/kinds.py has no MODULES"
    return names


def _graph():
    known = _modules()
    trees = {name: _parse(path) for name, path in known.items()}
    edges = {}
    for name, tree in trees.items():
        edges[name] = {}
        for target, line in _imports(name, tree, known):
            if target != name:
                edges[name].setdefault(target, line)
    return known, trees, edges


def _cycles(edges):
    """The strongly connected components of more than one module (Tarjan), each as a list of names."""
    index = {}
    low = {}
    stack = []
    on = set()
    out = []
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _a_cycle(comp, edges, known):
    """One cycle through a component, as 'a (a.py:12) -> b (b.py:3) -> a' (the lines of the imports)."""
    members = set(comp)
    start = comp[0]
    # shortest path from each successor of start back to start, within the component (BFS)
    prev = {start: None}
    queue = [start]
    found = None
    while queue and found is None:
        v = queue.pop(0)
        for w in sorted(edges[v]):
            if w not in members:
                continue
            if w == start:
                found = v
                break
            if w not in prev:
                prev[w] = v
                queue.append(w)
    path = [found]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])
    path.reverse()  # start ... found
    path.append(start)
    text = []
    for a, b in zip(path, path[1:]):
        text.append("%s (%s:%d)" % (a, os.path.relpath(known[a], FIRMWARE), edges[a][b]))
    return " -> ".join(text) + " -> " + start


def test_the_graph_is_read():
    known, trees, edges = _graph()
    assert "mcagent" in known and "mcagent.compat" in known and "main" in known and "sensors" in known
    assert "mcagent.compat" in edges["mcagent.http"]  # from mcagent import compat
    assert "mcagent.http" in edges["mcagent.httputil"]
    assert "mcagent.httputil" not in edges["mcagent.http"]  # loaded by name (compat.call_cold)


def test_no_import_cycles():
    known, trees, edges = _graph()
    cycles = [_a_cycle(c, edges, known) for c in _cycles(edges)]
    for c in cycles:
        print("import cycle:", c)
    assert not cycles, "import cycles in firmware/:\n  " + "\n  ".join(cycles)


def _reaches(name, tree, known, edges):
    """(module, line) this module imports or names for a compat loader."""
    return sorted(edges[name].items()) + _named_loads(tree, known)


def test_the_walls():
    known, trees, edges = _graph()
    app = ("runtime", "sensors", "main", "boards")
    bad = []
    for name in sorted(known):
        top = name.split(".")[0]
        for target, line in _reaches(name, trees[name], known, edges):
            ttop = target.split(".")[0]
            if top == "mcagent" and ttop in app:
                bad.append("%s:%d (mcagent) reaches the app layer: %s" % (known[name], line, target))
            if top == "sensors" and ttop == "runtime":
                bad.append("%s:%d (sensors) reaches runtime: %s" % (known[name], line, target))
            if name.startswith(("mcagent.store", "mcagent.exchange", "mcagent.kind")) and target.startswith(
                ("mcagent.http", "mcagent.identity", "mcagent.enroll", "mcagent.token", "mcagent.uploa")
            ):
                bad.append("%s:%d (the flash log, the wire format) reaches the network: %s"
                           % (known[name], line, target))
            if name in ("mcagent.dsc", "mcagent.dscput") and target in (
                "mcagent.identity",
                "mcagent.enroll",
                "mcagent.token",
            ):
                bad.append("%s:%d (dsc) reaches identity: %s" % (known[name], line, target))
    assert not bad, "\n".join(bad)


def _sys_uses_outside_compat(attrs):
    """(module, node) of each `sys.<attr>` (attr in attrs) or `from sys import <attr>` outside compat."""
    known, trees, edges = _graph()
    for name in sorted(known):
        if name == "mcagent.compat":
            continue
        for node in ast.walk(trees[name]):
            is_sys = getattr(getattr(node, "value", None), "id", "") == "sys"
            if isinstance(node, ast.Attribute) and node.attr in attrs and is_sys:
                yield known[name], node
            if isinstance(node, ast.ImportFrom) and node.module == "sys":
                if any(a.name in attrs for a in node.names):
                    yield known[name], node


def test_only_compat_knows_the_platform():
    bad = [
        "%s:%d sys.%s" % (path, node.lineno, getattr(node, "attr", "(from sys import)"))
        for path, node in _sys_uses_outside_compat(("platform", "implementation"))
    ]
    assert not bad, "platform checks outside mcagent.compat:\n" + "\n".join(bad)


def test_no_module_unloading_outside_compat():
    """compat.unload is the one unloader: nobody else edits sys.modules (or deletes a module by hand)."""
    bad = ["%s:%d sys.modules" % (path, node.lineno) for path, node in _sys_uses_outside_compat(("modules",))]
    assert not bad, "\n".join(bad)


def test_mcagent_modules_do_not_import_the_package():
    """The package mcagent is the public face (Agent) and names its submodules (imports them, or loads them
    by name): they import what they need from each other, the exception classes from mcagent.errors, never
    from the package (that would be a cycle through the names it loads them by)."""
    known, trees, edges = _graph()
    bad = [
        "%s:%d imports from the package mcagent (use mcagent.errors or the submodule)" % (known[name], line)
        for name in sorted(known)
        if name.startswith("mcagent.")
        for target, line in sorted(edges[name].items())
        if target == "mcagent"
    ]
    assert not bad, "\n".join(bad)


def test_httputil_uses_the_connections_interface():
    """httputil, the cold half of http, works through Connection's buffer interface, not its `_` members."""
    known, trees, edges = _graph()
    bad = [
        "%s:%d conn.%s" % (known["mcagent.httputil"], node.lineno, node.attr)
        for node in ast.walk(trees["mcagent.httputil"])
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and getattr(node.value, "id", "") == "conn"
    ]
    assert not bad, "\n".join(bad)


# A class split over several modules for heap (the common path resident, the rare paths loaded per use) is
# one room: its cold halves work on its `_` state. Nobody else touches another object's `_` members.
ROOMS = {
    "mcagent.storeboot": ("mcagent.store",),
    "mcagent.storewrite": ("mcagent.store",),
    "mcagent.storeinfo": ("mcagent.store",),
    "mcagent.uploadcold": ("mcagent.uploader",),
    "mcagent.httpsetup": ("mcagent.http",),
    "mcagent.enroll": ("mcagent.identity",),
    "mcagent.token": ("mcagent.identity",),
    "mcagent.agentutil": ("mcagent", "mcagent.identity"),  # the Agent's rare paths and Identity.status
}


def test_no_module_reaches_into_another_rooms_private_members():
    """`x._name` with x other than self/cls only in a module and the cold halves of its own class (ROOMS),
    and there only on a name that stands for that class's object (st, store, up, conn, ident)."""
    known, trees, edges = _graph()
    owners = {"st": "mcagent.store", "store": "mcagent.store", "up": "mcagent.uploader",
              "conn": "mcagent.http", "ident": "mcagent.identity"}
    bad = []
    for name in sorted(known):
        for node in ast.walk(trees[name]):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            holder = getattr(node.value, "id", None)
            if holder in ("self", "cls", "compat", "sys", "os", "struct", "S"):
                continue  # own state; module-level names of a module (S: storeboot's name for store)
            rooms = ROOMS.get(name, (name,))
            if owners.get(holder) in rooms:
                continue
            if holder is None and name in owners.values():
                continue  # self.x._y inside the owner's module (store.Reader and its Store)
            bad.append("%s:%d %s.%s" % (known[name], node.lineno, holder or ast.dump(node.value)[:40],
                                         node.attr))
    assert not bad, "\n".join(bad)


def test_loads_by_name_are_known_and_run_in_functions():
    """A module loaded by name is a module the walls can see (a string, "prefix." + name, or a record kind's
    module from kinds.MODULES), and the load runs inside a function, never at import time: that is what
    makes a by-name load safe to leave out of the cycle check (both modules are fully imported by then)."""
    known, trees, edges = _graph()
    bad = []
    for name in sorted(known):
        tree = trees[name]
        for target, line in _named_loads(tree, known):
            if target.startswith("<"):
                bad.append("%s:%d loads a module the test cannot name: %s" % (known[name], line, target))
        for node in tree.body:  # module level (outside def and class bodies)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            for call in ast.walk(node):
                f = getattr(call, "func", None)
                if isinstance(call, ast.Call) and getattr(f, "attr", getattr(f, "id", None)) in _LOADERS:
                    bad.append("%s:%d loads a module by name at import time" % (known[name], call.lineno))
    assert not bad, "\n".join(bad)
