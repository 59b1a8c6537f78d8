"""The ``.pth`` hook, tested in fresh interpreters of this environment, as users meet it.

Each check runs in a subprocess because the hook acts at interpreter start-up
and on the first import of Toil; the test process itself has Toil loaded long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello_workflow.py"


def fresh_python(code: str, cwd: Path) -> Any:
    """Run ``code`` in a new interpreter; it prints one JSON value, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interpreter_start_does_not_import_toil(tmp_path: Path) -> None:
    loaded = fresh_python(
        "import sys, json; "
        "print(json.dumps({'hook': any(type(f).__name__ == '_Finder' for f in sys.meta_path), "
        "'heavy': sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('toil', 'boto3', 'botocore', 'trio', 'pyfuse3') "
        "or m.startswith('jobstore.') and m != 'jobstore._toil_hook')}))",
        tmp_path,
    )
    # The hook is installed (so this test is about the hook, not a missing .pth) ...
    assert loaded["hook"] is True
    # ... and it loaded none of the heavy modules.
    assert loaded["heavy"] == []


@pytest.mark.parametrize(
    "locator",
    ["local:/x/store", "local:relative/store"],
)
def test_toil_resolves_local(locator: str, tmp_path: Path) -> None:
    got = fresh_python(
        "import json; from toil.common import Toil; "
        f"s = Toil.getJobStore({locator!r}); "
        "print(json.dumps([type(s).__module__, type(s).__name__, s.locator, "
        f"Toil.canonical_locator({locator!r})]))",
        tmp_path,
    )
    expected = f"local:{tmp_path / locator.removeprefix('local:')}"
    assert got == ["jobstore.store", "JobStore", expected, expected]


def test_toil_resolves_s3(moto_endpoint: str, tmp_path: Path) -> None:
    got = fresh_python(
        "import json; from toil.common import Toil; s = Toil.getJobStore('s3:bucket/p'); "
        "print(json.dumps([type(s).__module__, type(s).__name__, s.locator]))",
        tmp_path,
    )
    assert got == ["jobstore.store", "JobStore", "s3:bucket/p"]


@pytest.mark.parametrize("first_import", ["toil.options.common", "toil.common"])
def test_parse_jobstore_makes_relative_local_absolute(first_import: str, tmp_path: Path) -> None:
    """Toil's option parser (whichever module loads first) canonicalises our locators."""
    got = fresh_python(
        f"import json, {first_import}; from toil.options.common import parse_jobstore; "
        "print(json.dumps([parse_jobstore(x) for x in "
        "['local:rel', 'local:/abs/store', 's3:bucket/a//b/', 'rel', 'file:rel']]))",
        tmp_path,
    )
    assert got == [
        f"local:{tmp_path / 'rel'}",
        "local:/abs/store",
        "s3:bucket/a/b",
        f"file:{tmp_path / 'rel'}",  # Toil's own schemes keep Toil's behaviour
        f"file:{tmp_path / 'rel'}",
    ]


def test_other_schemes_still_go_to_toil(tmp_path: Path) -> None:
    got = fresh_python(
        "import json; from toil.common import Toil; "
        "print(json.dumps([type(Toil.getJobStore(x)).__name__ "
        f"for x in ['file:{tmp_path}/a', '{tmp_path}/b', 'c']]))",
        tmp_path,
    )
    assert got == ["FileJobStore", "FileJobStore", "FileJobStore"]


def test_toil_cli_parser_resolves_local(tmp_path: Path) -> None:
    """The locator Toil's own argument parser stores in the config, as the leader sees it."""
    got = fresh_python(
        "import json; from toil.job import Job; "
        "o = Job.Runner.getDefaultOptions('local:rel/store'); print(json.dumps(o.jobStore))",
        tmp_path,
    )
    assert got == f"local:{tmp_path / 'rel' / 'store'}"


@pytest.mark.parametrize(
    ("locator", "reason"),
    [
        ("local:", "local: needs a path, as in local:/tmp/run1 (got 'local:')"),
        ("locl:/x", "unknown job store type 'locl' in 'locl:/x' (want local:<path> or s3:"),
        ("s3:No_Bucket", "not a valid S3 bucket name in 's3:No_Bucket'"),
    ],
)
def test_a_bad_locator_on_the_command_line_is_one_line(
    locator: str, reason: str, tmp_path: Path
) -> None:
    """Not Toil's 65 lines of usage, nor its traceback with an unfilled f-string."""
    for command, argument in [
        ([sys.executable, str(EXAMPLE)], "jobStore"),
        ([str(Path(sys.executable).parent / "toil"), "clean"], "jobStore"),
        (
            [str(Path(sys.executable).parent / "toil-cwl-runner"), "--jobStore"],
            "--jobstore/--jobStore",
        ),
    ]:
        if argument.startswith("--"):
            command = [*command, locator, "wf.cwl"]
        else:
            command = [*command, locator]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert f": error: argument {argument}: {reason}" in done.stderr
    assert not any(tmp_path.iterdir())


def test_a_bad_locator_from_python_is_an_exception(tmp_path: Path) -> None:
    got = fresh_python(
        "import json\n"
        "from toil.common import Toil\n"
        "from toil.options.common import parse_jobstore\n"
        "out = []\n"
        "for call in (lambda: parse_jobstore('local:'), lambda: parse_jobstore('locl:/x'),\n"
        "             lambda: Toil.getJobStore('locl:/x')):\n"
        "    try:\n"
        "        call()\n"
        "    except Exception as e:\n"
        "        out.append([type(e).__name__, str(e)])\n"
        "print(json.dumps(out))",
        tmp_path,
    )
    assert [name for name, _ in got] == ["InvalidLocator", "InvalidLocator", "RuntimeError"]
    assert got[0][1].startswith("local: needs a path")
    assert got[2][1].startswith("unknown job store type 'locl' in 'locl:/x'")
