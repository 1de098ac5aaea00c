# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import subprocess
import sys


def test_import_registers_the_plugin_in_mmseg():
    """A plain `import mmseg_wavemix` is enough (what custom_imports does)."""
    code = ('import mmseg_wavemix\n'
            'from mmseg.registry import MODELS\n'
            'from mmengine.registry import HOOKS\n'
            "names = ['WaveMix', 'WaveMixHead', 'SoftmaxFocalLoss']\n"
            'print([MODELS.get(n).__module__ for n in names],\n'
            "      HOOKS.get('OptimizerSwitchHook').__module__)\n")
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('mmseg_wavemix.') == 4
