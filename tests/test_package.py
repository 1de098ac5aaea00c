# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import subprocess
import sys

from .conftest import REPO_ROOT

# the project's Python: package, tools, tests and configs
SOURCES = ['mmseg_wavemix', 'tools', 'tests', 'configs', 'setup.py']


def run_python(code):
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_import_registers_the_plugin_in_mmseg():
    """A plain `import mmseg_wavemix` is enough (what custom_imports does)."""
    out = run_python(
        'import mmseg_wavemix\n'
        'from mmseg.registry import HOOKS, MODELS\n'
        "names = ['WaveMix', 'WaveMixHead', 'SoftmaxFocalLoss', 'LN2d']\n"
        'print([MODELS.get(n).__module__ for n in names],\n'
        "      HOOKS.get('OptimizerSwitchHook').__module__)\n")
    assert out.count('mmseg_wavemix.') == 5


def test_import_changes_no_other_library():
    """Nothing lands in mmengine's root registries, no torchvision operator
    is defined and mmpretrain is not imported."""
    out = run_python(
        'import sys, torch\n'
        'import mmseg_wavemix\n'
        'from mmengine.registry import HOOKS, MODELS\n'
        "print('LN2d' in MODELS.module_dict,\n"
        "      'OptimizerSwitchHook' in HOOKS.module_dict,\n"
        "      'mmpretrain' in sys.modules, 'torchvision' in sys.modules,\n"
        "      hasattr(torch.ops.torchvision, 'nms'))\n")
    assert out.split() == ['False'] * 5


def test_classification_import_registers_in_mmpretrain():
    out = run_python(
        'import mmseg_wavemix.classification\n'
        'from mmpretrain.registry import HOOKS, MODELS\n'
        "print(MODELS.get('WaveMix').__module__,\n"
        "      MODELS.get('WTConvNeXt').__module__,\n"
        "      HOOKS.get('OptimizerSwitchHook').__module__)\n")
    assert out.count('mmseg_wavemix.') == 3


def test_code_style():
    """flake8 and isort, as setup.cfg configures them, find nothing."""
    for tool in (['flake8'], ['isort', '--check-only']):
        result = subprocess.run(
            [sys.executable, '-m', *tool, *SOURCES], cwd=REPO_ROOT,
            capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + \
            result.stderr[-3000:]
