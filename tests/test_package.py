# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import functools
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

from .conftest import REPO_ROOT

# the project's Python: package, tools, tests and configs
SOURCES = ['mmseg_wavemix', 'tools', 'tests', 'configs', 'setup.py']


def run_python(code, stdin=None):
    result = subprocess.run([sys.executable, '-c', code], input=stdin,
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


def markdown_anchors(text):
    """The anchors GitHub gives a markdown file's headings."""
    anchors = set()
    for heading in re.findall(r'^#+ (.+)$', text, re.MULTILINE):
        anchor = re.sub(r'[^\w\- ]', '', heading.strip().lower())
        anchors.add(anchor.replace(' ', '-'))
    return anchors


@functools.lru_cache(maxsize=None)
def file_anchors(path):
    """The anchors of the headings of the markdown file at ``path`` (in the
    repository), read once."""
    with open(osp.join(REPO_ROOT, path)) as f:
        return markdown_anchors(f.read())


def brace_expansion(path):
    """``a/{b,c}/d`` as ``['a/b/d', 'a/c/d']``."""
    match = re.search(r'\{([^{}]*)\}', path)
    if match is None:
        return [path]
    return [
        expanded for choice in match.group(1).split(',')
        for expanded in brace_expansion(path[:match.start()] + choice +
                                        path[match.end():])
    ]


# Prints which of the dotted names given on stdin (a JSON list) are neither
# a module nor an attribute of one.
UNRESOLVED = """
import importlib, json, sys

def resolves(name):
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False

print(json.dumps([n for n in json.load(sys.stdin) if not resolves(n)]))
"""


def test_docs_name_what_exists():
    """The package's dotted names in docstrings, comments and docs import,
    and the files and sections that the markdown files link to or name are
    there."""
    names = set()
    for name in repository_files():
        if name.endswith(('.py', '.md', '.yml', '.yaml', '.sh')):
            with open(osp.join(REPO_ROOT, name)) as f:
                names.update(re.findall(
                    r'mmseg_wavemix(?:\.[A-Za-z_]\w*)+(?<!\.py)(?<!\.md)',
                    f.read()))
    unresolved = run_python(UNRESOLVED, stdin=json.dumps(sorted(names)))
    missing = json.loads(unresolved.splitlines()[-1])
    for doc in ['README.md', *(
            osp.join('docs', name)
            for name in os.listdir(osp.join(REPO_ROOT, 'docs'))
            if name.endswith('.md'))]:
        with open(osp.join(REPO_ROOT, doc)) as f:
            text = f.read()
        folder = osp.dirname(doc)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if target.startswith(('http://', 'https://')):
                continue
            path, _, anchor = target.partition('#')
            linked = osp.normpath(osp.join(folder, path)) if path else doc
            if not osp.exists(osp.join(REPO_ROOT, linked)):
                missing.append(f'{doc}: link {target}')
            elif anchor and anchor not in file_anchors(linked):
                missing.append(f'{doc}: link {target}')
        # repository paths (and patterns) named in the text; the build makes
        # the .mim copies, '...' stands for any path
        for path in re.findall(
                r'(?<![\w/.-])((?:tools|configs|tests|mmseg_wavemix|docs|'
                r'benchmarks|requirements)/(?:[\w./*-]|\{[\w,]+\})*'
                r'[\w*}])', text):
            if '.mim' not in path and '...' not in path and not all(
                    glob.glob(osp.join(REPO_ROOT, each))
                    for each in brace_expansion(path)):
                missing.append(f'{doc}: {path}')
    assert not missing, missing


def repository_files():
    """The checkout's files as git sees them (untracked ones not ignored
    included), to copy: a build reads only what a clone holds."""
    result = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [f for f in result.stdout.splitlines()
            if osp.isfile(osp.join(REPO_ROOT, f))]


def build_wheels(tmp_path):
    """The two ways a wheel is made: from the source tree (`pip install .`,
    `pip install git+URL`) and from the sdist built from it (`python -m
    build`, PyPI). Returns their files, by wheel."""
    src = tmp_path / 'src'
    for name in repository_files():
        if name.startswith(('benchmarks/', 'docs/', 'tests/')):
            continue  # not packaged; the copy stays small
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(osp.join(REPO_ROOT, name), src / name)

    def run(*command, cwd):
        result = subprocess.run([sys.executable, *command], cwd=cwd,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + \
            result.stderr[-3000:]

    pip_wheel = ['-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                 '--no-index', '-q']
    run(*pip_wheel, '-w', str(tmp_path / 'from_tree'), str(src), cwd=src)
    run('setup.py', '-q', 'sdist', '-d', str(tmp_path / 'sdist'), cwd=src)
    # the build's copies into the package are gone from the tree again
    assert not (src / 'mmseg_wavemix' / '.mim').exists()
    sdist, = (tmp_path / 'sdist').iterdir()
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / 'unpacked', filter='data')
    unpacked, = (tmp_path / 'unpacked').iterdir()
    run(*pip_wheel, '-w', str(tmp_path / 'from_sdist'), str(unpacked),
        cwd=tmp_path)
    wheels = {}
    for folder in ('from_tree', 'from_sdist'):
        wheel, = (tmp_path / folder).glob('*.whl')
        with zipfile.ZipFile(wheel) as z:
            wheels[wheel] = {n for n in z.namelist()
                             if '.dist-info/' not in n}
    return wheels


def test_wheels_carry_configs_and_tools(tmp_path):
    """A wheel holds the configs, the tools and the model index under
    mmseg_wavemix/.mim, as OpenMMLab packages do (what `mim train
    mmseg_wavemix CONFIG` and `mim search mmseg_wavemix` read); installed
    from it, the tools take a config as `mmseg_wavemix::wavemix/x.py`."""
    wheels = build_wheels(tmp_path)
    (wheel, tree), (_, sdist) = wheels.items()
    assert tree == sdist
    tracked = repository_files()
    expected = {f'mmseg_wavemix/.mim/{f}' for f in tracked
                if f.startswith(('configs/', 'tools/')) or
                f == 'model-index.yml'}
    assert {f for f in tree if '/.mim/' in f} == expected
    assert {f for f in tracked if f.startswith('mmseg_wavemix/') and
            f.endswith('.py')} <= tree

    site = tmp_path / 'site'
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
         '-q', '--target', str(site), str(wheel)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    # the installed tools/test.py, away from the checkout, finds the config
    # in the installed package, builds its model and stops at the missing
    # checkpoint
    tool = site / 'mmseg_wavemix' / '.mim' / 'tools' / 'test.py'
    out = subprocess.run(
        [sys.executable, str(tool),
         'mmseg_wavemix::wavemix/wavemix_16x2_l4_cityscapes-demo.py',
         'missing.pth', '--work-dir', str(tmp_path / 'work')],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)),
        capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == \
        'error: checkpoint not found: missing.pth', out.stderr[-2000:]
