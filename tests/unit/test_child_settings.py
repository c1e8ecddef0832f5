"""``make run`` hands its children the settings it resolved (stack.run.child_environ):
a site file's services, hours and departments reach every child, not only the scalar
sections; a relative site path still works from the project folder the children run in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.settings import PROJECT_ROOT, load_settings
from stack.run import child_environ

SITE = """
[[services]]
id = "citizens"
tenant = "city"
name = "市民課"
dids = ["0312345678"]
queue = "citizens"
lines = 7
channel = "phone"
open_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
open_time = "00:00"
close_time = "24:00"
closed_on_holidays = false

[[departments]]
id = "tax"
tenant = "city"
name = "税務課"
extensions = ["2301"]
"""

CHILD = """
import json
from common.settings import load_settings
s = load_settings()
svc = s.services[0]
print(json.dumps({"days": svc.open_days, "close": svc.close_time,
                  "departments": [d.id for d in s.departments],
                  "secret": s.web.secret_key, "port": s.asterisk.sip_port}))
"""


def test_a_child_reads_the_site_file_and_the_parents_settings(tmp_path: Path,
                                                                monkeypatch) -> None:
    (tmp_path / "site.toml").write_text(SITE)
    monkeypatch.chdir(tmp_path)  # the site file named relative to where make run starts
    environ = {"PATH": os.environ["PATH"], "MADOGUCHI_CONFIG": "site.toml",
               "MADOGUCHI_SITE__DATA_DIR": str(tmp_path / "data"),
               "MADOGUCHI_ASTERISK__SIP_PORT": "5088"}
    parent = load_settings(environ)
    assert parent.services[0].close_time == "24:00"  # the site file, not the defaults

    env = child_environ(parent, environ)
    assert load_settings(env) == parent  # every setting, lists and scalars alike
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    seen = json.loads(out)
    assert seen == {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "close": "24:00", "departments": ["tax"],
                    "secret": parent.web.secret_key, "port": 5088}
