# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""A tool forked from the tests' server runs as in a fresh interpreter."""
import subprocess
import sys

import pytest
from mmengine.config import Config

from ..conftest import REPO_ROOT
from .demo_data import MAIN_CONFIG, tool_env, tool_server

SCRIPTS = {
    'output': ('import os, sys\n'
               'print(__name__, sys.argv, os.getcwd(), os.environ["ANSWER"])\n'
               'print(sys.path[0])\n'
               'print("to stderr", file=sys.stderr)\n'),
    'exit_status': 'import sys\nsys.exit(3)\n',
    'exit_message': 'import sys\nsys.exit("stopped: a reason")\n',
    'exception': 'raise ValueError("a reason")\n',
    'sigkill': 'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n',
    'atexit': 'import atexit\natexit.register(print, "at exit")\n',
    # what the server imported, frozen from the collector: Triton's
    # bindings report objects left at exit as leaks on stderr
    'imports': 'import mmseg_wavemix, triton\nprint(triton.__version__)\n',
}


def fresh_and_forked(script, tmp_path, timeout=60):
    path = tmp_path / 'script.py'
    path.write_text(script)
    argv = [str(path), 'an argument']
    env = dict(tool_env(), ANSWER='42')
    fresh = subprocess.run([sys.executable, *argv], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=timeout)
    assert tool_server().serves(tool_env())
    forked = tool_server().run(argv, tmp_path, env, timeout)
    return fresh, forked


@pytest.mark.parametrize('name', list(SCRIPTS))
def test_a_forked_script_runs_as_a_fresh_one(name, tmp_path):
    fresh, forked = fresh_and_forked(SCRIPTS[name], tmp_path)
    assert forked.args == fresh.args
    assert forked.returncode == fresh.returncode
    assert forked.stdout == fresh.stdout
    if name == 'exception':
        assert forked.returncode == 1
        assert 'Traceback' in forked.stderr
        assert forked.stderr.endswith('ValueError: a reason\n')
    else:
        assert forked.stderr == fresh.stderr


def test_the_plugin_is_not_imported_before_the_tool(tmp_path):
    _, forked = fresh_and_forked(
        'import sys\nprint("mmseg_wavemix" in sys.modules, '
        '"mmseg" in sys.modules)\n', tmp_path)
    assert forked.stdout == 'False True\n'


def test_a_run_past_its_timeout_is_killed(tmp_path):
    path = tmp_path / 'sleep.py'
    path.write_text('import time\ntime.sleep(600)\n')
    with pytest.raises(subprocess.TimeoutExpired):
        tool_server().run([path], REPO_ROOT, tool_env(), timeout=1)
    # and the server serves the next
    path.write_text('print("next")\n')
    assert tool_server().run([path], REPO_ROOT, tool_env(),
                             timeout=60).stdout == 'next\n'


def test_configs_format_alike_once(monkeypatch):
    """The tests' process and the server format each config text once
    (format_configs_once): the text is the same as without."""
    from mmengine.config import config
    cfg = Config.fromfile(MAIN_CONFIG)
    once = cfg.pretty_text
    assert cfg.pretty_text == once
    monkeypatch.setattr(config, 'FormatCode', config.FormatCode.original)
    assert cfg.pretty_text == once


def test_configs_load_alike_with_the_metafiles_parsed_once(monkeypatch):
    """The tests' process and the server parse mmseg's metafiles once
    (read_metafiles_once): configs load as they do without."""
    from mmengine.config import utils
    once = Config.fromfile(MAIN_CONFIG).to_dict()
    monkeypatch.setattr(utils, 'load', utils.load.original)
    assert Config.fromfile(MAIN_CONFIG).to_dict() == once
