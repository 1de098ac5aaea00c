# Copyright (c) mmseg_wavemix contributors. All rights reserved.
import argparse
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmseg_wavemix.utils.checks import InputError, package_file, tool_path
from mmseg_wavemix.utils.cli import (expandable_segments_for_graphs,
                                     positive_int, read_config,
                                     request_training_graphs,
                                     resolve_config_path, unpin_without_cuda,
                                     use_cpu_distributed)

from .conftest import REPO_ROOT, logged_messages


def test_resolve_config_path():
    path = resolve_config_path('mmseg::_base_/datasets/cityscapes.py')
    assert osp.isfile(path)
    assert Config.fromfile(path).dataset_type == 'CityscapesDataset'
    assert resolve_config_path('configs/x.py') == 'configs/x.py'
    # an editable install: the checkout's configs (a wheel's are under
    # .mim, tests/test_package.py)
    name = 'wavemix/wavemix_256x16_l4_cityscapes.py'
    assert resolve_config_path(f'mmseg_wavemix::{name}') == osp.join(
        REPO_ROOT, 'configs', name)
    with pytest.raises(InputError, match='not installed'):
        resolve_config_path('no_such_package::x.py')


def test_read_config_names_what_it_cannot_read(tmp_path):
    name = 'mmseg_wavemix::wavemix/wavemix_256x16_l4_cityscapes.py'
    assert read_config(name).train_dataloader.batch_size == 5
    with pytest.raises(InputError, match=r'^config file not found: x\.py$'):
        read_config('x.py')
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    with pytest.raises(InputError,
                       match=f'cannot read the config {broken}: SyntaxError'):
        read_config(str(broken))


def test_positive_int():
    parser = argparse.ArgumentParser()
    parser.add_argument('--shape', type=positive_int, nargs=2)
    assert parser.parse_args(['--shape', '1', '2048']).shape == [1, 2048]
    for bad in ('0', '-3'):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=f'{bad} is not an integer >= 1'):
            positive_int(bad)
    with pytest.raises(ValueError):
        positive_int('two')


def test_tool_path_names_the_tool_from_anywhere(tmp_path, monkeypatch):
    """Messages name our tools where they are: relative in the checkout,
    in full elsewhere."""
    name = 'convert_wavemix_weights.py'
    monkeypatch.chdir(REPO_ROOT)
    assert tool_path(name) == f'tools/{name}'
    monkeypatch.chdir(tmp_path)
    assert tool_path(name) == osp.join(REPO_ROOT, 'tools', name)
    # a wheel's package holds them in .mim, also where a folder of that name
    # lies next to it
    package = tmp_path / 'site' / 'mmseg_wavemix'
    for where in (package / '.mim' / 'tools', tmp_path / 'site' / 'tools'):
        where.mkdir(parents=True)
        (where / name).touch()
    assert package_file(f'tools/{name}', str(package)) == str(
        package / '.mim' / 'tools' / name)


def test_use_cpu_distributed():
    cfg = Config(
        dict(
            env_cfg=dict(dist_cfg=dict(backend='nccl')),
            model=dict(
                backbone=dict(norm_cfg=dict(type='SyncBN')),
                decode_head=[dict(norm_cfg=dict(type='SyncBN'))])))
    use_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head[0].norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg.device_ids is None


def test_unpin_without_cuda():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/wavemix/wavemix_256x16_l4_cityscapes.py'))
    assert cfg.train_dataloader.pin_memory is True  # the recipe's
    cfg.val_dataloader.pin_memory = True
    unpin_without_cuda(cfg)
    assert cfg.train_dataloader.pin_memory is False
    assert cfg.val_dataloader.pin_memory is False
    assert 'pin_memory' not in cfg.test_dataloader or \
        cfg.test_dataloader.pin_memory is False
    unpin_without_cuda(Config(dict(train_dataloader=None)))  # nothing to do


def test_request_training_graphs_turns_on_the_hook_or_adds_one():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/wavemix/wavemix_256x16_l4_cityscapes.py'))
    hooks = [hook.type for hook in cfg.custom_hooks]
    request_training_graphs(cfg)
    # the recipe's hook, in its place; the others as they were
    assert [hook.type for hook in cfg.custom_hooks] == hooks
    assert [hook.get('cuda_graphs') for hook in cfg.custom_hooks] == [
        True if kind == 'FastTrainingHook' else None for kind in hooks]
    # --no-cuda-graphs: the recipe's hook without them; no hook added
    request_training_graphs(cfg, on=False)
    assert [hook.get('cuda_graphs') for hook in cfg.custom_hooks] == [
        False if kind == 'FastTrainingHook' else None for kind in hooks]
    cfg = Config(dict(custom_hooks=[dict(type='NonFiniteLossHook')]))
    request_training_graphs(cfg, on=False)
    assert cfg.custom_hooks == [dict(type='NonFiniteLossHook')]
    request_training_graphs(cfg)
    assert cfg.custom_hooks == [
        dict(type='NonFiniteLossHook'),
        dict(type='FastTrainingHook', cuda_graphs=True)
    ]
    cfg = Config.fromfile(
        osp.join(REPO_ROOT,
                 'configs/wavemix_cls/wavemix_64x4_l2_1xb64_digits.py'))
    with pytest.raises(InputError, match='classification config: train it '
                       'without --cuda-graphs'):
        request_training_graphs(cfg)


@pytest.fixture
def allocator_unset(monkeypatch):
    """No allocator configuration in the environment, and whatever the
    tests set there undone after them; CUDA available and not initialized
    (mmengine's logger made before: it would look for the device)."""
    MMLogger.get_current_instance()
    for name in ('PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF',
                 'WORLD_SIZE', 'SLURM_NTASKS'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: False)
    # recorded as absent, so that the value the code sets is undone
    monkeypatch.setenv('PYTORCH_CUDA_ALLOC_CONF', '')
    monkeypatch.delenv('PYTORCH_CUDA_ALLOC_CONF')
    return monkeypatch


def graphed(launcher='none', cuda_graphs=True):
    return Config(
        dict(
            launcher=launcher,
            custom_hooks=[
                dict(type='mmseg.FastTrainingHook', cuda_graphs=cuda_graphs)
            ]))


def test_graphed_training_gets_expandable_segments(allocator_unset):
    expandable_segments_for_graphs(graphed(cuda_graphs=False))
    assert 'PYTORCH_CUDA_ALLOC_CONF' not in os.environ
    with logged_messages() as logged:
        expandable_segments_for_graphs(graphed())
    assert os.environ['PYTORCH_CUDA_ALLOC_CONF'] == \
        'expandable_segments:True'
    assert logged == [
        'CUDA graphs for training: PYTORCH_CUDA_ALLOC_CONF=expandable_'
        'segments:True (less memory held in blocks of the wrong size; set '
        'the variable to configure the allocator otherwise)'
    ]
    # one process of torchrun's too
    allocator_unset.delenv('PYTORCH_CUDA_ALLOC_CONF')
    allocator_unset.setenv('WORLD_SIZE', '1')
    expandable_segments_for_graphs(graphed('pytorch'))
    assert os.environ['PYTORCH_CUDA_ALLOC_CONF'] == \
        'expandable_segments:True'


@pytest.mark.parametrize('case', [
    'PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF', 'processes',
    'slurm_tasks', 'cuda_initialized', 'no_cuda'
])
def test_expandable_segments_are_left_to_the_user_and_to_one_process(
        allocator_unset, case):
    """Not where the environment configures the allocator, where several
    processes train (without graphs), where CUDA has allocated already (the
    variable would change nothing), or without CUDA."""
    if case.startswith('PYTORCH'):
        allocator_unset.setenv(case, 'max_split_size_mb:128')
    elif case == 'processes':
        allocator_unset.setenv('WORLD_SIZE', '2')
    elif case == 'slurm_tasks':
        allocator_unset.setenv('SLURM_NTASKS', '4')
    elif case == 'cuda_initialized':
        allocator_unset.setattr(torch.cuda, 'is_initialized', lambda: True)
    else:
        allocator_unset.setattr(torch.cuda, 'is_available', lambda: False)
    before = {
        name: os.environ.get(name)
        for name in ('PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF')
    }
    expandable_segments_for_graphs(
        graphed({'processes': 'pytorch', 'slurm_tasks': 'slurm'}.get(
            case, 'none')))
    assert before == {name: os.environ.get(name) for name in before}
