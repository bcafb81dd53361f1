"""Every module of kdseg imports, and no two modules import each other at top level (kdseg.import_check)."""

from __future__ import annotations

from kdseg.import_check import cycles, import_graph, modules


def test_no_import_cycles_among_top_level_imports() -> None:
    mods = modules()
    assert "kdseg.layout" in mods and "kdseg.sweep.driver" in mods
    assert cycles(import_graph(mods)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_folder_contract_depends_on_nothing_of_kdseg() -> None:
    assert import_graph(modules())["kdseg.layout"] == set()


def test_every_module_imports(capsys) -> None:
    from kdseg.import_check import main

    assert main() == 0, capsys.readouterr().out
