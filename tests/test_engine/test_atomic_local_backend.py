# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os
import subprocess
import sys

from mmengine.fileio import get_file_backend

from mmseg_wavemix.engine import AtomicLocalBackend

from ..conftest import REPO_ROOT


def test_selected_by_backend_args(tmp_path):
    backend = get_file_backend(
        str(tmp_path), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    target = tmp_path / 'sub' / 'ckpt.pth'
    backend.put(b'first', target)
    backend.put(b'second', target)
    backend.put_text('text', tmp_path / 'note.txt')
    assert target.read_bytes() == b'second'
    assert (tmp_path / 'note.txt').read_text() == 'text'
    assert sorted(os.listdir(tmp_path / 'sub')) == ['ckpt.pth']  # no temps


def test_kill_while_saving_keeps_the_old_file(tmp_path):
    target = tmp_path / 'iter_10.pth'
    target.write_bytes(b'complete old checkpoint')
    # A process that is SIGKILLed after writing the new data, just before it
    # replaces the old file.
    code = (
        'import os, signal, sys\n'
        'from mmseg_wavemix.engine import AtomicLocalBackend\n'
        'os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n'
        f'AtomicLocalBackend().put(b"x" * 10_000_000, {str(target)!r})\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT)
    assert result.returncode == -9
    assert target.read_bytes() == b'complete old checkpoint'
