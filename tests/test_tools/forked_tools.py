# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Runs the command-line tools for the tests, each in a new process forked
from one that has already imported torch, mmengine and mmseg.

The tests run the tools a hundred times or so. Starting Python and importing
those libraries took 6.5 s of each run on a 2-core CI machine, about a third
of the suite. A forked process runs ``tools/<script>`` as ``python
tools/<script> ARGS`` does (as ``__main__``, with its own arguments,
environment, working directory, output files and exit status: an uncaught
exception's traceback and 1, ``sys.exit``'s status, or minus a signal's
number), only with those libraries already imported, the metafiles that
mmengine reads at each config load parsed (:func:`read_metafiles_once`) and
each config text formatted once (:func:`format_configs_once`).
``mmseg_wavemix`` is not imported before the fork, so that each tool imports
the plugin as a user's run does.

This file is the server (``python forked_tools.py``: JSON lines, a request
on stdin, ``{"pid": ...}`` then ``{"returncode": ...}`` on stdout) and its
client (:class:`ToolServer`); it imports nothing of the tests or the package.
"""
import atexit
import gc
import importlib
import json
import os
import os.path as osp
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# What every tool imports first and no test changes; a training run's
# environment log imports torch._dynamo (through torchvision), its
# visualizer matplotlib's Agg canvas: 1.2 s of each run on 2 cores.
PRELOAD = ('torch', 'torch._dynamo', 'mmengine.runner', 'mmseg.apis',
           'mmseg.models', 'matplotlib.backends.backend_agg')


def _memoise(module, name: str, key) -> bool:
    """Replace ``module.name`` by a function that returns its first result
    for each ``key(*args, **kwargs)`` (calls whose key is None are not
    memoised); False if there is no such function or it is done already.
    The new function's ``original`` is the replaced one."""
    original = getattr(module, name, None)
    if original is None or hasattr(original, 'original'):
        return False
    results = {}

    def once(*args, **kwargs):
        k = key(*args, **kwargs)
        if k is None:
            return original(*args, **kwargs)
        if k not in results:
            results[k] = original(*args, **kwargs)
        return results[k]

    once.original = original
    setattr(module, name, once)
    return True


def read_metafiles_once(read_now=()) -> None:
    """Make mmengine parse each metafile once in this process, and those
    of the packages ``read_now`` at once (for forks made next to inherit).

    For each ``package::`` base a config names, mmengine parses all of the
    package's metafiles to see whether it names a model (mmseg's 53 YAML
    files: 0.4 s for each base on a 2-core machine, four in a decoder
    config; test_configs.py alone parsed them 1,885 times). The files do not
    change during the tests, and mmengine only reads what it parsed.
    """
    from mmengine.config import utils
    from mmengine.utils import get_installed_path, is_installed

    def metafile(file, *args, **kwargs):
        if not (args or kwargs) and isinstance(file, str) and \
                file.endswith('.yml'):
            return file

    if not _memoise(utils, 'load', metafile):
        return  # another mmengine, or done already
    for package in read_now:
        if is_installed(package):
            try:  # parses every metafile, then finds no config named ''
                utils._get_cfg_metainfo(get_installed_path(package), '')
            except (ValueError, OSError, KeyError):
                pass


def format_configs_once() -> None:
    """Make mmengine format each config text once in this process.

    A training run formats its config with yapf five times (the logged
    config, the dumped one, the visualizer's, the message hub's, and again
    at each checkpoint it saves): 0.3-0.4 s each for a decoder config on a
    2-core machine, the same text each time. yapf's output depends on the
    text and the style only.
    """
    from mmengine.config import config
    _memoise(config, 'FormatCode',
             lambda *args, **kwargs: repr((args, sorted(kwargs.items()))))


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def _run_tool(request: dict) -> None:
    """In the forked process: become ``python ARGV...`` and exit as it."""
    os.setsid()  # a timeout kills the tool with its workers
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request['stdout'], os.O_WRONLY),
                            (2, request['stderr'], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    # The frozen objects go back to the collector as the tool exits, after
    # its own atexit handlers: else the interpreter's clean-up leaves them
    # and libraries report them as leaks (Triton's nanobind does).
    atexit.register(gc.unfreeze)
    script = request['argv'][0]
    sys.argv = list(request['argv'])
    sys.path[0] = osp.dirname(osp.abspath(script))
    runpy.run_path(script, run_name='__main__')
    # Exceptions and SystemExit leave through the server's frames (which
    # hold no try blocks), so the interpreter reports them and exits as a
    # script's would, atexit handlers included.
    sys.exit(0)


def serve() -> None:
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        read_metafiles_once(read_now=('mmseg', 'mmpretrain'))
        format_configs_once()
        from mmengine.config import Config
        Config(dict(type='yapf')).pretty_text  # its grammar, loaded lazily
    except Exception as e:  # the client then starts each tool afresh
        _reply(dict(error=f'{type(e).__name__}: {e}'))
        return
    # What is imported stays: the collector need not walk it in each fork
    # (mmengine's datasets call gc.collect(), 0.2 s each with it).
    gc.freeze()
    _reply(dict(ready=True))
    for line in sys.stdin:
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_tool(request)
        _reply(dict(pid=pid))
        _, status = os.waitpid(pid, 0)
        _reply(dict(returncode=os.waitstatus_to_exitcode(status)))


def _imports_alike(env: dict, other: dict) -> bool:
    """Whether the libraries would import the same in either environment:
    pytest's name of the current test, which changes, aside."""
    return {k: v for k, v in env.items() if not k.startswith('PYTEST_')} == \
        {k: v for k, v in other.items() if not k.startswith('PYTEST_')}


class ToolServer:
    """A server process started with ``env`` in ``cwd``; :meth:`run` is
    ``subprocess.run([sys.executable, *argv], capture_output=True,
    text=True, ...)``.

    Args:
        env (dict): The environment of the server.
        cwd (str): Working directory of the server.
        start_timeout (float): Seconds the imports may take.
    """

    def __init__(self, env: dict, cwd: str, start_timeout: float = 300):
        self.env = dict(env)
        self._outputs = tempfile.mkdtemp(prefix='forked_tools_')
        self._log = osp.join(self._outputs, 'server.log')
        with open(self._log, 'w') as log:
            self._process = subprocess.Popen(
                [sys.executable, osp.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=cwd)
        self._received = b''
        start = self._read(start_timeout) or dict(
            error=f'no answer in {start_timeout} s')
        self.ready = bool(start.get('ready'))
        self.error = start.get('error')
        if not self.ready:
            self.close()

    def _read(self, timeout):
        """The server's next message, or None if none came in time or the
        server ended. Read unbuffered: ``select`` sees no line that a
        buffered file has already taken in."""
        deadline = time.monotonic() + timeout
        fd = self._process.stdout.fileno()
        while b'\n' not in self._received:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._received += chunk
        line, self._received = self._received.split(b'\n', 1)
        return json.loads(line)

    def serves(self, env: dict) -> bool:
        """Whether a run in ``env`` can be forked from this server."""
        return self.ready and _imports_alike(env, self.env)

    def run(self, argv, cwd: str, env: dict,
            timeout: float) -> subprocess.CompletedProcess:
        """Run ``argv`` (a script and its arguments) in ``cwd`` with
        ``env``, which :meth:`serves`."""
        args = [sys.executable, *map(str, argv)]
        out, err = (osp.join(self._outputs, name)
                    for name in ('stdout', 'stderr'))
        for path in (out, err):
            open(path, 'w').close()
        self._process.stdin.write(
            json.dumps(
                dict(argv=args[1:], cwd=str(cwd), env=dict(env),
                     stdout=out, stderr=err)).encode() + b'\n')
        self._process.stdin.flush()
        started = self._read(60)
        ended = started and self._read(timeout)
        if started is None or ended is None and \
                self._process.poll() is not None:
            raise RuntimeError('the tool server stopped: ' +
                               open(self._log).read()[-3000:])
        if ended is None:  # the timeout
            os.killpg(started['pid'], signal.SIGKILL)
            self._read(60)
        with open(out) as f, open(err) as g:
            stdout, stderr = f.read(), g.read()
        if ended is None:
            raise subprocess.TimeoutExpired(args, timeout, stdout, stderr)
        return subprocess.CompletedProcess(args, ended['returncode'], stdout,
                                           stderr)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(60)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self._outputs, ignore_errors=True)


if __name__ == '__main__':
    serve()
