"""The command line's last line of defence: a failure no command expected is one paragraph and
exit 1 (the traceback only with --debug anywhere on the line, or SCM_RAY_DEBUG=1)."""

from __future__ import annotations

import sys
import types

import pytest

from scm_ray import cli


@pytest.fixture
def failing_command(monkeypatch):
    module = types.ModuleType("scm_ray_test_failing_command")
    module.add_arguments = lambda parser: parser.add_argument("--x", default="1")
    module.run = lambda args: (_ for _ in ()).throw(RuntimeError(f"disk on fire ({args.x})"))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "boom", (module.__name__, "fails"))
    monkeypatch.delenv("SCM_RAY_DEBUG", raising=False)


def test_an_unexpected_error_is_one_paragraph_without_a_traceback(failing_command, capsys):
    assert cli.main(["boom", "--x", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scm-ray boom: error: RuntimeError: disk on fire (2)\n") and "--debug" in err


def test_debug_shows_the_traceback(failing_command, monkeypatch):
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(["boom", "--debug"])
    monkeypatch.setenv("SCM_RAY_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["boom"])
