"""Every command's --help: its own name, a description, an example; kdseg-sweep under its own name."""

from __future__ import annotations

import argparse

import pytest

from kdseg.cli.app import HELP, build_parser, main, sweep_main


def commands(p: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [words]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += commands(child, (*words, name))
    return out


def help_text(run, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_description_and_an_example(capsys) -> None:
    found = commands(build_parser())
    assert {" ".join(w) for w in found} == set(HELP)  # every command is documented, none twice
    assert len(found) >= 12
    for words in found:
        text = help_text(main, [*words, "--help"], capsys)
        name = " ".join(("kdseg", *words))
        assert text.startswith(f"usage: {name} "), text
        prose = text.split("\n\n")[1]  # the description: the paragraph after the usage
        assert not prose.startswith(("positional", "options")) and len(prose) > 30, (name, text)
        example = text.split("example:\n" if "example:\n" in text else "examples:\n")[1]
        assert example.strip().startswith(name + " "), (name, text)


def test_kdseg_sweep_help_names_itself_and_shows_sweep_overrides(capsys) -> None:
    text = help_text(sweep_main, ["--help"], capsys)
    assert text.startswith("usage: kdseg-sweep ")
    assert "Run a hyper-parameter sweep" in text and "--smoke" in text
    examples = text.split("examples:\n")[1]
    assert "kdseg-sweep search_spaces/" in examples and "--set sweep.num_samples=4" in examples
    assert "--smoke --set data.root=" in examples


def test_kdseg_sweep_parses_like_kdseg_sweep(capsys) -> None:
    assert sweep_main(["/nonexistent/space.yaml"]) == 2
    assert "space.yaml" in capsys.readouterr().err
