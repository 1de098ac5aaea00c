# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'mmseg_wavemix', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


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
    # Install torch first: an installed build satisfies `torch>=2.0`, so pip
    # never pulls a second (CUDA) one next to it.
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'cls': read_requirements('cls.txt'),
        'tests': read_requirements('tests.txt'),
        'deploy': read_requirements('deploy.txt'),
    },
    zip_safe=False,
)
