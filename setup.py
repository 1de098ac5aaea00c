# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
# What OpenMMLab packages carry under their .mim folder, for mim (`mim train
# mmseg_wavemix CONFIG`, `mim search`) and for `mmseg_wavemix::...` config
# paths in our tools: configs, tools and the model index.
MIM_FILES = ['configs', 'tools', 'model-index.yml']
MIM_DIR = osp.join(HERE, 'mmseg_wavemix', '.mim')


def read_requirements(name):
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'mmseg_wavemix', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def copy_mim_files():
    """Copy MIM_FILES into the package for a wheel or an sdist; returns the
    copies made, to be removed after the build (an sdist's build finds them
    there already and copies nothing). An editable install reads the
    checkout's configs and tools instead (`utils.checks.package_file`)."""
    if not {'sdist', 'bdist_wheel'} & set(sys.argv[1:]):
        return []
    copies = []
    for name in MIM_FILES:
        src, dst = osp.join(HERE, name), osp.join(MIM_DIR, name)
        if not osp.exists(src):
            continue
        remove(dst)
        os.makedirs(MIM_DIR, exist_ok=True)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)
        copies.append(dst)
    return copies


def remove(path):
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path)
    elif osp.lexists(path):
        os.remove(path)


mim_copies = copy_mim_files()
try:
    setup(
        name='mmseg_wavemix',
        version=read_version(),
        description='WaveMix (arXiv 2205.14375) for MMSegmentation 1.x and '
        'mmpretrain',
        long_description=open(osp.join(HERE, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        packages=find_packages(include=['mmseg_wavemix', 'mmseg_wavemix.*']),
        python_requires='>=3.8',
        # Install torch first: an installed build satisfies `torch>=2.0`, so
        # pip never pulls a second (CUDA) one next to it.
        install_requires=read_requirements('runtime.txt'),
        extras_require={
            'cls': read_requirements('cls.txt'),
            'tests': read_requirements('tests.txt'),
            'deploy': read_requirements('deploy.txt'),
        },
        include_package_data=True,
        zip_safe=False,
    )
finally:
    for path in mim_copies:
        remove(path)
    if mim_copies and not os.listdir(MIM_DIR):
        os.rmdir(MIM_DIR)
