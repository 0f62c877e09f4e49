"""What the CLI tests share."""

from __future__ import annotations


def one_line_error(capsys) -> str:
    """The error a command printed: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]
