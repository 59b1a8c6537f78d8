"""A non-editable install (``pip install .``) ships the Toil hook and it works.

The editable install the suite runs from is covered by test_hook.py; here a
real wheel is built and installed into a fresh virtual environment, which
borrows the test environment's dependencies (Toil, boto3) through a path entry
so that nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_the_hook(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = dist.glob("jobstore-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "jobstore-toil.pth" in names, names
        assert "jobstore/_toil_hook.py" in names

        env_dir = tmp_path / "venv"
        venv.create(env_dir, with_pip=False)
        python = env_dir / "bin" / "python"
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        # A pure wheel installs by unpacking it into site-packages.
        zf.extractall(site)
    # Dependencies come from the test environment, after the wheel's own files.
    (Path(site) / "zz-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    probe = (
        "import sys, jobstore\n"
        "assert 'toil' not in sys.modules, 'toil imported at start-up'\n"
        "from toil.common import Toil\n"
        "store = Toil.getJobStore('local:relative/store')\n"
        "print(type(store).__module__, jobstore.__file__, store.locator)\n"
    )
    out = subprocess.run(
        [str(python), "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    ).stdout.split()
    assert out[0] == "jobstore.store"
    assert out[1].startswith(site), "jobstore must come from the installed wheel"
    assert out[2] == f"local:{tmp_path / 'relative' / 'store'}"
