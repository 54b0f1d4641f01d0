"""The workflow dependency graph: cycles named in full, dependencies ordered first."""

from __future__ import annotations

import pytest

from taskmesh.common.task_graph import find_cycle, topological_order


def test_a_dag_has_no_cycle_and_orders_dependencies_first() -> None:
    """Every name comes after the names it depends on."""
    graph = {"report": ["load"], "load": ["a", "b"], "a": [], "b": ["a"]}
    order = topological_order(graph)
    assert sorted(order) == sorted(graph)
    for name, dependencies in graph.items():
        assert all(order.index(d) < order.index(name) for d in dependencies)
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"root": [], "x": ["root", "y"], "y": ["z"], "z": ["x"]}, ["x", "y", "z", "x"]),
    ],
)
def test_a_cycle_is_named_from_where_it_closes(
    graph: dict[str, list[str]], cycle: list[str]
) -> None:
    """The cycle is reported as the chain of dependencies that leads back to its start."""
    assert find_cycle(graph) == cycle
    with pytest.raises(ValueError, match=" -> ".join(cycle)):
        topological_order(graph)


def test_deep_chains_need_no_recursion() -> None:
    """A chain longer than Python's recursion limit is ordered all the same."""
    graph = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(5000)}
    assert topological_order(dict(reversed(graph.items()))) == list(graph)
