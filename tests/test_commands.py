"""Every command is listed by ``python -m adni_lightning --help`` and has a ``--help`` of its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from adni_lightning import commands
from adni_lightning.cli import LIGHTNING_COMMANDS
from adni_lightning.main import main

PACKAGE = Path(__file__).resolve().parents[1] / "adni_lightning"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) is None
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m adni_lightning COMMAND")
    for name in (*LIGHTNING_COMMANDS, *commands.COMMANDS):
        assert f"\n  {name} " in text, name
    assert "synth" in commands.COMMANDS and "cv" in commands.COMMANDS


@pytest.mark.parametrize("name", [*LIGHTNING_COMMANDS, *commands.COMMANDS])
def test_every_command_has_a_help_naming_the_program(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m adni_lightning ") and f" {name} " in text.split("\n")[0] + " "
    if name in commands.COMMANDS:
        parser = commands.parser(name)
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "config", "print_config"):
                assert action.help, f"{name} {action.option_strings} has no help"


def test_the_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "adni_lightning", "--help"], capture_output=True, text=True, check=True)
    assert "cv" in out.stdout and "fit" in out.stdout


def test_imports_run_one_way():
    """data/ and models/ import nothing from the package root, synth, commands or evaluation."""
    upper = (
        "adni_lightning.main",
        "adni_lightning.module",
        "adni_lightning.synth",
        "adni_lightning.commands",
        "adni_lightning.evaluation",
        "adni_lightning.figures",
        "adni_lightning.prediction_writer",
        "adni_lightning.interpret",
    )
    for layer in ("data", "models"):
        for path in (PACKAGE / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    name = node.module if node.level == 0 else f"adni_lightning.{layer}.{node.module}"
                    assert not name.startswith(upper), f"{path.name} imports {name}"
                    assert name != "adni_lightning", f"{path.name} imports the package root"
    code = "import adni_lightning.data.datamodule, sys; assert 'adni_lightning.synth' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_project_error_on_the_command_line_is_one_line_without_traceback(tmp_path):
    config = Path(__file__).resolve().parents[1] / "configs" / "adni.yaml"
    overrides = {
        "--data.manifest.data_dir": tmp_path / "none",
        "--data.cache_dir": tmp_path / "cache",
        "--trainer.default_root_dir": tmp_path / "run",
        "--trainer.accelerator": "cpu",
        "--trainer.precision": "32-true",
    }
    command = [sys.executable, "-m", "adni_lightning", "fit", "--config", str(config)]
    command += [str(part) for pair in overrides.items() for part in pair]
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"python -m adni_lightning fit: error: CSV not found: {tmp_path / 'none' / 'ADNI_1p5T_Filtered.csv'}"
    assert not (tmp_path / "none").exists()  # a real-data config never creates the data folder


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports when run, at any level (also inside functions; not for type checkers)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("adni_lightning")}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = (
                node.module or ""
                if not node.level
                else ".".join([*parts[: len(parts) - node.level + 1], node.module or ""]).rstrip(".")
            )
            if base.startswith("adni_lightning"):
                # ``from adni_lightning import commands`` imports a module, ``from x import name`` imports x
                named = {f"{base}.{alias.name}" for alias in node.names}
                found |= {name for name in named if _is_module(name)} or {base}
    return found - {module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module → modules it imports), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        stack.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_the_package_has_no_import_cycle():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        graph[_module_name(path)] = _imports(path)
    assert graph["adni_lightning.cli"] >= {"adni_lightning.checkpoint", "adni_lightning.module"}  # the graph is read
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # and a cycle is found
