"""The processes' shared main() (common.process.run_process), in a real child process: a
signal stops it cleanly with exit code 0; a settings error is logged with its fix and
ends it with 2, before the process body runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.process import cancel_tasks

PROJECT_ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from common.process import run_process

async def serve(settings, stop):
    print("serving", settings.site.log_level, flush=True)
    await stop.wait()
    print("stopped", flush=True)
    return 0

sys.exit(run_process("probe", serve))
"""


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
    return {**env, "MADOGUCHI_SITE__DATA_DIR": str(tmp_path), **extra}


def test_sigterm_sets_the_stop_event_and_the_process_exits_0(tmp_path: Path) -> None:
    proc = _start(_env(tmp_path, MADOGUCHI_SITE__LOG_LEVEL="WARNING"))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "serving WARNING"  # site.log_level read
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"


def test_a_settings_error_is_logged_with_the_key_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "site.toml"
    proc = _start(_env(tmp_path, MADOGUCHI_CONFIG=str(missing)))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out == ""  # the body never ran
    assert "probe ERROR" in err and f"{missing} does not exist" in err, err


def test_cancel_tasks_ends_a_task_that_lost_its_first_cancellation() -> None:
    """As a redis-py call on Python 3.11 can: the cancellation becomes a timeout that a
    retry loop handles, and the loop goes on; a second cancellation ends it."""
    swallowed = []

    async def retrying() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # taken for a timeout: retry

    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(retrying(), name="retrying")
        await asyncio.sleep(0)
        await cancel_tasks([task], timeout=5)
        return task

    task = asyncio.run(main())
    assert task.cancelled() and swallowed == [True]



def test_cancel_tasks_gives_up_after_its_time_and_names_what_runs_on(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> bool:
        release = asyncio.Event()

        async def stubborn() -> None:
            while not release.is_set():
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    continue

        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        await cancel_tasks([task], timeout=0.3)
        running = not task.done()
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running

    assert asyncio.run(main())
    assert "tasks still running after 0.3 s of cancelling: stubborn" in caplog.text
