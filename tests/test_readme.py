"""The README's Python and shell snippets run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)


def test_the_python_snippet_runs_as_written(tmp_path: Path) -> None:
    (snippet,) = blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"
    assert not Path("/tmp/jobstore-readme").exists()


def test_every_mount_option_is_in_the_readme() -> None:
    from jobstore.mount.cli import _parser

    text = README.read_text()
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("mount", "umount"):
        for action in commands[name]._actions:
            for option in set(action.option_strings) - {"-h", "--help"}:
                assert f"`{option}" in text or f"{option}`" in text, f"{name} {option}"
