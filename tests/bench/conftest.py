"""Fixtures shared by the benchmark commands' tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def usage_error(capsys):
    """``usage_error(main, argv, prog)``: runs a bench command's ``main(argv)``, which must end
    in argparse's usage error (exit status 2, its last stderr line beginning ``"<prog>: error:"``);
    returns that line, for the test to check what it says."""
    def run(main, argv: list[str], prog: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"{prog}: error:")
        return err
    return run
