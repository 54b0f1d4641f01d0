"""The dependency graph of a workflow's tasks, by local name: order and cycles.

Pure functions shared by the master (which names a cycle to the client) and the ledger (which
stores the tasks in an order where every dependency exists before its dependents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Graph = Mapping[str, Sequence[str]]  # local name -> local names it depends on


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as ``[a, b, c, a]`` (a depends on b ... on a), or None when the graph is a DAG."""
    done: set[str] = set()
    for root in graph:
        cycle = _cycle_from(graph, root, done)
        if cycle is not None:
            return cycle
    return None


def _cycle_from(graph: Graph, root: str, done: set[str]) -> list[str] | None:
    """Depth-first from ``root`` (iteratively: workflows may be deep); the first cycle met."""
    if root in done:
        return None
    path: list[str] = [root]
    on_path = {root}
    pending = [iter(graph.get(root, ()))]
    while pending:
        following = next(pending[-1], None)
        if following is None:
            done.add(path[-1])
            on_path.discard(path.pop())
            pending.pop()
        elif following in on_path:
            return [*path[path.index(following) :], following]
        elif following not in done and following in graph:
            path.append(following)
            on_path.add(following)
            pending.append(iter(graph[following]))
    return None


def topological_order(graph: Graph) -> list[str]:
    """Every name after all it depends on, otherwise in the graph's order; ValueError on a cycle."""
    cycle = find_cycle(graph)
    if cycle is not None:
        raise ValueError(f"dependency cycle: {' -> '.join(cycle)}")
    order: list[str] = []
    placed: set[str] = set()
    for root in graph:
        _place(graph, root, placed, order)
    return order


def _place(graph: Graph, root: str, placed: set[str], order: list[str]) -> None:
    """Append ``root`` after its unplaced dependencies (post-order, iteratively)."""
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        name, expanded = stack.pop()
        if name in placed:
            continue
        if expanded:
            placed.add(name)
            order.append(name)
            continue
        stack.append((name, True))
        stack.extend((d, False) for d in reversed(graph.get(name, ())) if d in graph)
