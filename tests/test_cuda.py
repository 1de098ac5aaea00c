# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""What only a CUDA machine can check (``pytest -m cuda``; tools/gpu_checks.sh
runs them with the GPU benchmarks). Without CUDA each test is reported as
skipped, with the reason."""
import copy
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_wavemix.models.accel import (BiasPassConv2d, FusedLevelMLP,
                                        FusedUpsample, Im2colGEMM,
                                        PointwiseGEMM, TrainingCUDAGraphs,
                                        fuse_level_mlps, fuse_norm_layers,
                                        prepare_for_inference,
                                        prepare_for_training,
                                        training_cuda_graphs)
from mmseg_wavemix.models.backbones import WaveMixBlock
from mmseg_wavemix.ops import haar_dwt, haar_dwt_packed, triton_support
from mmseg_wavemix.utils.analysis import build_model_from_config

from .conftest import REPO_ROOT, host_reads, logged_messages
from .test_ops.test_haar_triton import TOLERANCES

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason='needs a CUDA device (run on a GPU machine: '
        'tools/gpu_checks.sh)')
]


def textbook_bands(x):
    """LL, LH, HL, HH of the 2x2 blocks of ``x`` (even sizes), in float64."""
    x = x.double()
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat([(a + b + c + d) / 2,
                      torch.stack([a + b - c - d, a - b + c - d,
                                   a - b - c + d], 2).flatten(1, 2) / 2], 1)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('channels_last', [False, True])
# the second: several tiles along the fastest dimension in both layouts
@pytest.mark.parametrize('shape', [(2, 8, 34, 20), (1, 136, 6, 260)])
def test_haar_on_cuda_equals_the_float64_cpu_reference(dtype, channels_last,
                                                       shape):
    assert triton_support.available(), \
        'Triton >= 3.0 comes with CUDA builds of torch >= 2.4'
    x = torch.randn(*shape, dtype=torch.float64)
    device_x = x.to('cuda', dtype)
    # the transform of the input as rounded to dtype: the kernel's own error
    expected = textbook_bands(device_x.cpu())
    if channels_last:
        device_x = device_x.contiguous(memory_format=torch.channels_last)
    device_x.requires_grad_()
    packed = haar_dwt_packed(device_x)
    assert packed.dtype == dtype
    assert packed.is_contiguous(memory_format=torch.channels_last) == \
        channels_last
    torch.testing.assert_close(packed.cpu().double(), expected,
                               **TOLERANCES[dtype])
    # backward is the inverse transform: the gradient of <packed, g> is
    # idwt(g)
    weight = torch.randn_like(packed)
    grad, = torch.autograd.grad((packed * weight).sum(), device_x)
    cpu_x = x.clone().requires_grad_()
    ref_grad, = torch.autograd.grad(
        (haar_dwt_packed(cpu_x) * weight.cpu().double()).sum(), cpu_x)
    torch.testing.assert_close(grad.cpu().double(), ref_grad,
                               **TOLERANCES[dtype])
    ll, highs = haar_dwt(device_x)
    torch.testing.assert_close(
        torch.cat([ll, highs.flatten(1, 2)], 1), packed, rtol=0, atol=0)


def _demo_model():
    _, model = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py', {
            'model.decode_head.channels': 8,
            'model.decode_head.num_classes': 5
        })
    for module in model.modules():  # trained-looking statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.cuda().eval()


def test_fast_model_agrees_in_fp16():
    model = _demo_model()
    inputs = torch.randn(1, 3, 256, 512, device='cuda')
    with torch.no_grad():
        expected = model(inputs, mode='tensor').argmax(1)
    fast = prepare_for_inference(copy.deepcopy(model))
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        logits = fast(inputs.contiguous(memory_format=torch.channels_last),
                      mode='tensor')
    agreement = (logits.argmax(1) == expected).float().mean().item()
    assert agreement >= 0.995, agreement


def test_amp_training_step_with_memory_efficient_layers():
    """The recipe's AMP on GPU: memory-saving layers give the plain layers'
    gradients, and a GradScaler step trains."""
    torch.manual_seed(0)
    plain = WaveMixBlock(32, level=3).cuda()
    ours = WaveMixBlock(32, level=3, memory_efficient=True).cuda()
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 64, 64, device='cuda')
    grads = []
    for block in (plain, ours):
        with torch.autocast('cuda', dtype=torch.float16):
            out = block(x)
        out.float().square().mean().backward()
        grads.append([p.grad.float().clone() for p in block.parameters()])
    # under autocast each level keeps only its input
    assert type(out.grad_fn).__name__ == '_LevelMLPFunctionBackward'
    for (name, _), a, b in zip(plain.named_parameters(), *grads):
        if not name.endswith('upsample.bias'):  # BN follows: true grad 0
            torch.testing.assert_close(b, a, rtol=5e-2, atol=5e-3, msg=name)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cuda')
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        with torch.autocast('cuda', dtype=torch.float16):
            loss = ours(x).float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_svt_amp_step_on_cuda_matches_the_cpu(dtype):
    """SVT under CUDA autocast: the DTCWT in float32 (the authors' code
    fails under bf16), finite gradients, and the fp32 CUDA forward equal to
    the CPU one."""
    from mmseg_wavemix.models.backbones import ScatteringViT
    torch.manual_seed(0)
    cpu = ScatteringViT('s').eval()
    model = copy.deepcopy(cpu).cuda()
    x = torch.randn(2, 3, 224, 224)
    # cuDNN's convolutions use TF32 on Ampere and later by default
    with torch.no_grad(), torch.backends.cudnn.flags(
            enabled=True, allow_tf32=False):
        for a, b in zip(model(x.cuda()), cpu(x)):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast('cuda', dtype=dtype):
        outs = model(x.cuda())
    sum(o.float().square().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters())


@pytest.mark.parametrize('gemm_class,conv_args,memory_format', [
    (PointwiseGEMM, (48, 24, 1), torch.channels_last),
    # WaveMix-256's first stem convolution, of a prepared model's input and
    # of the data preprocessor's NCHW batch
    (Im2colGEMM, (3, 128, 3, 2, 1), torch.channels_last),
    (Im2colGEMM, (3, 128, 3, 2, 1), torch.contiguous_format),
])
def test_convolutions_as_gemms_equal_the_convolution_in_fp16(
        gemm_class, conv_args, memory_format):
    """A 1x1 convolution, and one of an image's 3 channels, as a GEMM with
    the bias in cuBLASLt's epilogue: output and gradients as close to the
    float64 ones as the convolution's (both round in fp16, differently), a
    channels_last output."""
    torch.manual_seed(0)
    conv = nn.Conv2d(*conv_args).cuda()
    gemm = gemm_class.from_conv(copy.deepcopy(conv))
    reference = copy.deepcopy(conv).double()
    x = torch.randn(2, conv_args[0], 16, 24, device='cuda').contiguous(
        memory_format=memory_format)
    results = []
    for layer in (reference, conv, gemm):
        xg = x.clone().double().requires_grad_() if layer is reference \
            else x.clone().requires_grad_()
        with torch.autocast('cuda', dtype=torch.float16,
                            enabled=layer is not reference):
            out = layer(xg)
        out.double().square().sum().backward()
        results.append((out.double(), xg.grad.double(),
                        layer.weight.grad.double(), layer.bias.grad.double()))
    assert results[2][0].is_contiguous(memory_format=torch.channels_last)
    for exact, ours_conv, ours_gemm in zip(*results):
        conv_error = (ours_conv - exact).abs().max()
        gemm_error = (ours_gemm - exact).abs().max()
        assert gemm_error <= 2 * conv_error + 1e-3 * exact.abs().max()


@pytest.mark.parametrize('keep_levels', [False, True])
def test_prepare_for_training_gives_the_same_amp_gradients(keep_levels):
    """The demo model under fp16 autocast, its classifier folded into the
    head's last transposed convolution (5 classes, 8 channels: the padded
    classes' path, the input recomputed for the weight's gradient), the
    stem's convolutions with their bias pass (timed inside the checkpointed
    stem): the plain model's gradients."""
    torch.manual_seed(0)
    _, plain = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py', {
            'model.decode_head.channels': 8,
            'model.decode_head.num_classes': 5
        })
    assert plain.decode_head.fold_classifier
    plain.cuda().train()
    fast = prepare_for_training(
        copy.deepcopy(plain), keep_levels=keep_levels)
    assert fast.backbone.layers[0].keep_levels == keep_levels
    assert any(isinstance(m, PointwiseGEMM) for m in fast.modules())
    assert isinstance(fast.decode_head.upsamples[0].conv, FusedUpsample)
    # the demo's 8-channel stem convolutions: bias passes (27 values a patch
    # of the first: wider than its output, no Im2colGEMM)
    assert all(isinstance(conv, BiasPassConv2d)
               for conv in fast.backbone.stem)
    inputs = torch.randn(2, 3, 128, 256, device='cuda')
    grads = []
    for model in (plain, fast):
        with torch.autocast('cuda', dtype=torch.float16):
            logits = model(inputs, mode='tensor')
        logits.float().square().mean().backward()
        grads.append({n: p.grad.float() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        if not name.endswith('upsample.bias'):  # BN follows: true grad 0
            torch.testing.assert_close(grads[1][name], grad, rtol=5e-2,
                                       atol=5e-3, msg=name)


def amp_sgd_steps(model, loss_of, lr, momentum=0., steps=3):
    """``steps`` SGD steps of ``loss_of(model)`` under fp16 autocast, each
    step's loss alive while the next one runs (as in a ``loss = ...;
    loss.backward()`` loop). Returns the losses, the log's CUDA graphs lines
    and the warnings' messages."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    with logged_messages() as logged, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(steps):
            optimizer.zero_grad()
            with torch.autocast('cuda', dtype=torch.float16):
                loss = loss_of(model)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses, [m for m in logged if m.startswith('CUDA graphs')], [
        str(w.message) for w in caught
    ]


def test_training_cuda_graphs_train_as_eager_training():
    """prepare_for_training(cuda_graphs=True): three AMP steps of the demo
    model replayed as graphs give eager training's losses, parameters and
    BatchNorm statistics (the warm-up steps' statistics put back, the
    optimizer's in-place steps and the head's repacked upsampling weights
    reaching the replays), the parts recorded together at the second step
    (the first runs eagerly) while the first step's loss is kept (its
    autograd graph keeps the parameters' gradient accumulators, made on the
    default stream: on an H200 in session 29, before the parameters had
    stand-ins, the capture failed), and evaluation runs eagerly."""
    torch.manual_seed(0)
    _, eager = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py', {
            'model.decode_head.num_classes': 5
        })
    eager.cuda().train()
    graphed = copy.deepcopy(eager)
    prepare_for_training(eager)
    prepare_for_training(graphed, cuda_graphs=True)
    assert isinstance(graphed.backbone.forward, TrainingCUDAGraphs)
    assert isinstance(graphed.decode_head.upsamples[0].conv, FusedUpsample)
    inputs = torch.randn(2, 3, 128, 256, device='cuda')
    labels = torch.randint(0, 5, (2, 128, 256), device='cuda')
    (eager_losses, _, _), (losses, logged, warned) = (amp_sgd_steps(
        model, lambda m: F.cross_entropy(m(inputs, mode='tensor').float(),
                                         labels), lr=0.1, momentum=0.9)
        for model in (eager, graphed))
    # a recording that failed says why (in full: the message)
    failures = [m for m in warned if m.startswith('CUDA graphs')]
    assert not failures, failures[0]
    assert [m.split(' for ')[0].split(' in ')[0] for m in logged] == [
        'CUDA graphs: recording the training backbone and decode_head',
        'CUDA graphs: recorded the training backbone and decode_head'
    ]
    # with the memory reserved then, which the log's "memory" does not show
    assert re.search(r' s; \d+\.\d GiB reserved now \(the log\'s memory '
                     r'counts allocations, which replays do not make\)',
                     logged[1]), logged[1]
    for part in (graphed.backbone, graphed.decode_head):
        assert [g is not None for g in part.forward.graphs.values()] == [True]
    assert eager_losses[-1] < eager_losses[0]
    torch.testing.assert_close(losses, eager_losses, rtol=1e-3, atol=1e-4)
    states = eager.state_dict(), graphed.state_dict()
    for name, value in states[0].items():
        if name.endswith('num_batches_tracked'):
            assert states[1][name].item() == value.item() == 3, name
        else:
            torch.testing.assert_close(states[1][name], value, rtol=1e-2,
                                       atol=1e-3, msg=name)
    graphed.eval()
    eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(graphed(inputs, mode='tensor'),
                                   eager(inputs, mode='tensor'), rtol=1e-2,
                                   atol=1e-3)


@pytest.mark.parametrize('config', [
    'wtconvnext/wtconvnext-tiny_upernet_4xb2-amp-80k_cityscapes-512x1024.py',
    'wavevit/wavevit-s_upernet_4xb2-amp-80k_cityscapes-512x1024.py',
    'svt/svt-s_upernet_8xb2-amp-160k_ade20k-512x512.py',
    'wavemix_decoders/deeplabv3plus_wavemix-256x16-l4-d8_4xb2-80k_'
    'cityscapes-512x1024.py'
])
def test_other_models_train_with_graphs_as_eagerly(config):
    """What ``tools/train.py CONFIG --cuda-graphs`` gives the other
    families' segmentation configs (UPerNet with an auxiliary head over
    WTConvNeXt, Wave-ViT and SVT; DeepLabV3+ over a dilated WaveMix):
    prepared for training, the backbone and both heads recorded together,
    three AMP steps through mmseg's loss give the eager prepared model's
    losses (no dropout or drop path: their random numbers differ)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    options = {
        'model.decode_head.dropout_ratio': 0.,
        'model.auxiliary_head.dropout_ratio': 0.
    }
    if 'upernet' in config:
        options['model.backbone.drop_path_rate'] = 0.
    cfg, eager = build_model_from_config(f'{REPO_ROOT}/configs/{config}',
                                         options)
    eager.cuda().train()
    graphed = copy.deepcopy(eager)
    prepare_for_training(eager)
    prepare_for_training(graphed, cuda_graphs=True)
    inputs = torch.randn(2, 3, 128, 256, device='cuda')
    samples = []
    for _ in range(2):
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(
            0, cfg.model.decode_head.num_classes, (1, 128, 256),
            device='cuda')))
        sample.set_metainfo(dict(img_shape=(128, 256), pad_shape=(128, 256)))
        samples.append(sample)

    def loss_of(model):
        parts = model(inputs, samples, mode='loss')
        return sum(v for k, v in parts.items() if 'loss' in k)

    (eager_losses, _, _), (losses, logged, warned) = (
        amp_sgd_steps(model, loss_of, lr=0.01) for model in (eager, graphed))
    failures = [m for m in warned if m.startswith('CUDA graphs')]
    assert not failures, failures[0]
    assert [m.split(' for ')[0] for m in logged if 'recording' in m] == [
        'CUDA graphs: recording the training backbone and decode_head and '
        'auxiliary_head'
    ]
    torch.testing.assert_close(losses, eager_losses, rtol=1e-2, atol=1e-3)


def fresh_process_env():
    """This process's environment for a tool started from it, without the
    allocator's configuration and the process count that the tool decides
    or reads itself."""
    return {
        name: value
        for name, value in os.environ.items() if name not in (
            'PYTORCH_CUDA_ALLOC_CONF', 'PYTORCH_ALLOC_CONF', 'WORLD_SIZE')
    }


def test_graphed_training_gets_expandable_segments_in_tools_train():
    """``tools/train.py --cuda-graphs`` sets the allocator's variable in its
    own process, torch imported (and CUDA found) before: PyTorch reads it
    when CUDA first allocates, so that the segments are expandable."""
    code = textwrap.dedent("""\
        import torch
        from mmengine.config import Config
        from mmseg_wavemix.utils.cli import expandable_segments_for_graphs
        assert torch.cuda.is_available()
        expandable_segments_for_graphs(Config(dict(custom_hooks=[
            dict(type='FastTrainingHook', cuda_graphs=True)])))
        x = torch.ones(64 << 20, device='cuda')
        print(sorted({str(s.get('is_expandable'))
                      for s in torch.cuda.memory._snapshot()['segments']}))
        """)
    env = fresh_process_env()
    done = subprocess.run([sys.executable, '-c', code], env=env,
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "['True']", done.stdout


class _ReadsOnTheHostWhenRecorded(nn.Module):
    """A convolution that reads a value on the host while a CUDA graph
    records it (what a kernel timed at its first call would do): the
    capture fails."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if torch.cuda.is_current_stream_capturing():
            x.sum().item()
        return self.conv(x)


def test_a_failed_training_recording_trains_on_without_graphs():
    """Where the recording fails, training goes on eagerly with a warning
    that says why, the device's random numbers still work (a capture that
    CUDA ended in error leaves PyTorch's generator marked as capturing), and
    a model recorded later in the process replays its steps."""
    model = nn.Module()
    model.backbone = _ReadsOnTheHostWhenRecorded()
    model.decode_head = nn.Conv2d(4, 2, 1)
    training_cuda_graphs(model.cuda())
    x = torch.randn(2, 4, 16, 16, device='cuda')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            model.decode_head(model.backbone(x)).square().sum().backward()
    failures = [
        str(w.message) for w in caught
        if str(w.message).startswith('CUDA graphs')
    ]
    # an AcceleratorError (a RuntimeError) in PyTorch 2.11
    assert len(failures) == 1 and re.search(
        'recording the training backbone and decode_head failed: '
        r'\w*Error: CUDA error: [^;]*captur', failures[0]), failures
    assert 'random numbers' not in failures[0]
    assert list(model.backbone.forward.graphs.values()) == [None]
    torch.randn(8, device='cuda')
    nn.init.kaiming_uniform_(torch.empty(4, 4, device='cuda'))
    good = nn.Module()
    good.backbone, good.decode_head = nn.Conv2d(4, 4, 3, padding=1), \
        nn.Conv2d(4, 2, 1)
    eager = copy.deepcopy(good.cuda())
    training_cuda_graphs(good)
    for _ in range(3):
        for m in (eager, good):
            m.zero_grad()
            m.decode_head(m.backbone(x)).square().sum().backward()
    assert [g is not None for g in good.backbone.forward.graphs.values()
            ] == [True]
    for a, b in zip(eager.parameters(), good.parameters()):
        torch.testing.assert_close(b.grad, a.grad)


@pytest.mark.parametrize('set_to_none', [True, False])
def test_training_graphs_accumulate_gradients_over_steps(set_to_none):
    """Replayed training steps whose gradients accumulate over two steps
    (mmengine's ``accumulative_counts``), or into zeroed ones, give eager
    training's gradients (the recorded backward returns its buffers, which
    autograd would keep as ``.grad``: pytorch/pytorch#181723)."""
    torch.manual_seed(0)
    graphed = nn.Module()
    graphed.backbone = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1),
                                     nn.BatchNorm2d(8), nn.GELU())
    graphed.decode_head = nn.Conv2d(8, 2, 1)
    eager = copy.deepcopy(graphed.cuda())
    training_cuda_graphs(graphed)
    for _ in range(4):  # observed, recorded, replayed twice
        xs = torch.randn(2, 2, 4, 16, 16, device='cuda')
        for model in (eager, graphed):
            model.zero_grad(set_to_none=set_to_none)
            for x in xs:
                model.decode_head(model.backbone(x)).square().sum().backward()
        for (name, a), b in zip(eager.named_parameters(),
                                graphed.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4,
                                       atol=1e-4, msg=name)
    assert [g is not None for g in graphed.backbone.forward.graphs.values()
            ] == [True]


def _unfreeze(model):
    model.backbone[0].requires_grad_(True)


def _move_and_scale(model):
    weight = model.backbone[0].weight
    weight.data = weight.data.mul(0.5)  # other memory, as Module.to() makes


def _replace_a_buffer(model):
    model.backbone[1].running_var = model.backbone[1].running_var.clone()


@pytest.mark.parametrize('change',
                         [_unfreeze, _move_and_scale, _replace_a_buffer])
def test_training_graphs_follow_a_parameter_changed_later(change):
    """A parameter unfrozen after the recording (its gradient was not
    recorded), moved to other memory (the graph read the old one) or a
    buffer replaced (the graph updated the old one): training gets eager
    training's gradients and statistics, the graphs are recorded again."""
    torch.manual_seed(0)
    graphed = nn.Module()
    graphed.backbone = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1),
                                     nn.BatchNorm2d(8), nn.GELU())
    graphed.decode_head = nn.Conv2d(8, 2, 1)
    graphed.backbone[0].requires_grad_(change is not _unfreeze)
    eager = copy.deepcopy(graphed.cuda())
    training_cuda_graphs(graphed)
    for step in range(6):
        if step == 3:
            for model in (eager, graphed):
                change(model)
        x = torch.randn(2, 4, 16, 16, device='cuda')
        for model in (eager, graphed):
            model.zero_grad()
            model.decode_head(model.backbone(x)).square().sum().backward()
        for (name, a), b in zip(eager.named_parameters(),
                                graphed.parameters()):
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-4,
                                           atol=1e-4, msg=name)
    for name, buffer in eager.named_buffers():
        torch.testing.assert_close(graphed.get_buffer(name), buffer,
                                   rtol=1e-4, atol=1e-4, msg=name)
    assert graphed.backbone[0].weight.grad is not None
    assert [g is not None for g in graphed.backbone.forward.graphs.values()
            ] == [True]


def test_recipe_forward_and_loss_make_the_host_wait_for_nothing():
    """The recipe's training forward, focal loss and acc_seg (the demo
    model, AMP, prepared for training) read no value on the host, so that
    it can launch the backward pass while the GPU runs the forward; a label
    outside the classes is then reported by the backward pass."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    _, model = build_model_from_config(
        f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py',
        {'model.decode_head.num_classes': 5})
    prepare_for_training(model.cuda().train())
    inputs = torch.randn(2, 3, 128, 256, device='cuda')
    labels = torch.randint(0, 5, (2, 1, 128, 256), device='cuda')
    labels[1, 0, 5, 7] = 255
    # the first call of each size times the kernels, reading their results
    # on the host (as cudnn.benchmark does); the calls after it read nothing
    with torch.autocast('cuda', dtype=torch.float16):
        model(inputs, mode='tensor').float().sum().backward()
    model.zero_grad()
    for bad in (False, True):
        if bad:
            labels[0, 0, 3, 4] = 7
        samples = [
            SegDataSample(
                gt_sem_seg=PixelData(data=label),
                metainfo=dict(img_shape=(128, 256), pad_shape=(128, 256)))
            for label in labels
        ]
        with host_reads() as reads, torch.autocast('cuda',
                                                   dtype=torch.float16):
            losses = model(inputs, samples, mode='loss')
        assert reads == [] and set(losses) == {'decode.loss_focal',
                                               'decode.acc_seg'}
        loss = losses['decode.loss_focal']
        if not bad:
            loss.backward()
            assert torch.isfinite(loss)
            continue
        model.zero_grad()
        with pytest.raises(ValueError, match='label 7 is outside 0..4'):
            loss.backward()


@pytest.mark.parametrize('optimizer', ['AdamW', 'SGD'])
def test_recipe_amp_optimizer_steps_read_nothing_on_the_host(optimizer):
    """The recipe's optimizers (AdamW, then SGD) are PyTorch's fused ones:
    AmpOptimWrapper's loss scaler hands them its scale and overflow flag on
    the GPU, where for the others it reads the flag on the host at every
    step. An overflow still skips the step and lowers the scale."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(
        f'{REPO_ROOT}/configs/_base_/schedules/wavemix_adamw_sgd_150e.py')
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    if optimizer == 'SGD':
        wrapper_cfg.optimizer = cfg.custom_hooks[0]['optimizer']
    assert wrapper_cfg.optimizer.type == optimizer
    assert wrapper_cfg.optimizer.fused
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 2, 1)).cuda()
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    x = torch.randn(2, 3, 16, 16, device='cuda')
    for step in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        scale = wrapper.loss_scaler.get_scale()
        with host_reads() as reads:
            with wrapper.optim_context(model):
                loss = model(x).float().square().mean()
            if step == 2:  # an overflow
                loss = loss * float('inf')
            wrapper.update_params(loss)
        assert reads == [], reads
        moved = any(not torch.equal(a, p)
                    for a, p in zip(before, model.parameters()))
        assert moved == (step < 2)
    assert wrapper.loss_scaler.get_scale() < scale


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_gelu_backward_with_bias_grad_equals_pytorch_in_float64(dtype):
    """The recipe's level MLP backward on CUDA (channels_last)."""
    from mmseg_wavemix.ops import gelu_triton
    grad, hidden = (
        (torch.randn(2, 512, 64, 128, device='cuda') * scale).to(dtype)
        .contiguous(memory_format=torch.channels_last) for scale in (1, 2))
    assert gelu_triton.applies(grad, hidden)
    expected = torch.ops.aten.gelu_backward(grad.double(), hidden.double())
    out, bias_grad = gelu_triton.gelu_backward_with_bias_grad_(grad, hidden)
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])
    torch.testing.assert_close(bias_grad.double(), expected.sum((0, 2, 3)),
                               rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_matmul_add_is_as_close_to_float64_as_addmm(dtype):
    """A WaveMix-256 block's input gradient (K = 64 reduced channels, 256
    block channels) over rows that end in a partial tile, both ways that
    the recipe's training chooses from."""
    from mmseg_wavemix.models.accel import pointwise_gemm
    from mmseg_wavemix.ops import level_mlp_triton
    a, w, c = (torch.randn(size, device='cuda').to(dtype)
               for size in ((8197, 64), (64, 256), (8197, 256)))
    expected = torch.addmm(c.double(), a.double(), w.double())
    addmm_error = (torch.addmm(c, a, w).double() - expected).abs().max()
    for out in (level_mlp_triton.matmul_add(a, w, c),
                pointwise_gemm.matmul_add(a, w, c)):
        assert out.dtype == dtype
        error = (out.double() - expected).abs().max()
        assert error <= 1.5 * addmm_error, (error, addmm_error)
    assert len(pointwise_gemm._FASTEST_MATMUL_ADD) >= 1  # timed once


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_bias_grad_equals_float64_column_sums(dtype):
    """A GEMM's bias gradient both ways the recipe's training chooses from
    (WaveMix-256's block reduction: 64 channels; a level MLP's: 256), over
    rows that end in a partial program."""
    from mmseg_wavemix.models.accel import pointwise_gemm
    from mmseg_wavemix.ops import gelu_triton
    for m, c in ((8197, 64), (4099, 256)):
        rows = torch.randn(m, c, device='cuda').to(dtype)
        expected = rows.double().sum(0)
        for out in (gelu_triton.bias_grad(rows),
                    pointwise_gemm.bias_grad(rows)):
            assert out.dtype == torch.float32
            torch.testing.assert_close(out.double(), expected, rtol=1e-5,
                                       atol=1e-3)
    assert len(pointwise_gemm._FASTEST_BIAS_GRAD) >= 2  # timed per size


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_bias_pass_convolution_is_as_close_to_float64_as_cudnns(dtype):
    """WaveMix-256's second stem convolution (128 -> 256 channels, 3x3,
    stride 2) under autocast, channels_last, both ways the training and
    inference choose from (cuDNN with its bias, or cuDNN without it and one
    Triton pass; its bias gradient from the column sums of the 16-bit
    gradient): output and gradients as close to float64 as cuDNN's; the
    bias gradient in the parameter's float32."""
    from mmseg_wavemix.models.accel import conv_bias
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 256, 3, 2, 1).cuda()
    x = torch.randn(2, 128, 34, 66, device='cuda').contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(2, 256, 17, 33, device='cuda', dtype=torch.float64)
    results = {}
    for name in ('float64', 'cudnn', 'triton', 'chosen'):
        layer = copy.deepcopy(conv)
        xg = x.clone().requires_grad_()
        with torch.autocast('cuda', dtype=dtype, enabled=name != 'float64'):
            if name == 'float64':
                layer.double()
                out = layer(xg.double())
            elif name == 'cudnn':
                out = layer(xg)
            elif name == 'triton':
                out = conv_bias._conv_and_bias_pass(layer, xg, layer.weight,
                                                    layer.bias)
            else:
                out = conv_bias.BiasPassConv2d.from_conv(layer)(xg)
        assert name == 'float64' or (out.dtype == dtype and out.is_contiguous(
            memory_format=torch.channels_last))
        (out.double() * weight).sum().backward()
        assert layer.bias.grad.dtype == layer.weight.dtype
        results[name] = [
            t.double()
            for t in (out, xg.grad, layer.weight.grad, layer.bias.grad)
        ]
    for label, exact, cudnn, triton, chosen in zip(
            ('out', 'x', 'weight', 'bias'), *results.values()):
        cudnn_error = (cudnn - exact).abs().max()
        # both round the output twice (the product, then with the bias)
        ulp = torch.finfo(dtype).eps * exact.abs().max()
        for ours in (triton, chosen):
            error = (ours - exact).abs().max()
            assert error <= 1.5 * cudnn_error + ulp, (label, error,
                                                      cudnn_error)
    assert len(conv_bias._FASTEST_CONV_BIAS) >= 1  # timed once


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_batch_norm_residual_ways_are_as_close_to_float64(dtype):
    """A WaveMix-256 block's output BatchNorm and residual in training
    (channels_last, pixels that end in partial blocks), both ways that the
    recipe's training chooses from (cuDNN's BatchNorm and an addition, or
    SyncBN's statistics and one Triton pass, then cuDNN's backward from
    those statistics): output, gradients and running statistics as close to
    float64 as cuDNN's."""
    from mmseg_wavemix.models.accel import norm_residual

    from .test_accel.test_norm_residual import expected_in_float64
    z, residual, grad = ((torch.randn(2, 256, 66, 130, device='cuda') * 3 +
                          1).to(dtype).contiguous(
                              memory_format=torch.channels_last)
                         for _ in range(3))
    weight = torch.empty(256, device='cuda').uniform_(0.5, 2)
    bias = torch.randn(256, device='cuda')
    out64, grads64, running64 = (
        [t.cuda() for t in ts] if isinstance(ts, (tuple, list)) else ts.cuda()
        for ts in expected_in_float64(z.cpu(), residual.cpu(), grad.cpu(),
                                      weight.cpu(), bias.cpu(), 0.1, 1e-5))
    results = {}
    for name, way in (('cudnn', norm_residual._by_cudnn),
                      ('triton', norm_residual._by_triton)):
        running = (torch.zeros(256, device='cuda'),
                   torch.ones(256, device='cuda'))
        out, saved = way(z.clone(), residual, weight, bias, *running, 0.1,
                         1e-5)
        grads = norm_residual.batch_norm_residual_backward(
            grad, z, weight, *running, saved, 1e-5, (True, True, True))
        results[name] = [(out.double() - out64).abs().max()] + [
            (a.double() - b).abs().max() / b.abs().max()
            for a, b in zip((*grads, *running), (*grads64, *running64))
        ]
    for ours, cudnn in zip(results['triton'], results['cudnn']):
        assert ours <= 1.5 * cudnn + 1e-6, (results['triton'],
                                            results['cudnn'])
    chosen, _ = norm_residual.batch_norm_residual(
        z.clone(), residual, weight, bias, torch.zeros(256, device='cuda'),
        torch.ones(256, device='cuda'), 0.1, 1e-5)
    torch.testing.assert_close(chosen.double(), out64, rtol=2e-2, atol=5e-2)
    assert len(norm_residual._FASTEST_NORM_RESIDUAL) >= 1  # timed once


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_linear_gelu_in_training_is_as_close_to_float64_as_the_layers(dtype):
    """A WaveMix-256 finest level's fc1 and GELU (256 + 128 channels to 512)
    over pixels that end in a partial tile, both ways that the recipe's
    training chooses from, with the GELU's input stored too."""
    from mmseg_wavemix.models.accel import pointwise_gemm

    def channels_last(*size):
        return torch.randn(*size, device='cuda').to(dtype).contiguous(
            memory_format=torch.channels_last)

    a, b = channels_last(2, 256, 33, 41), channels_last(2, 128, 33, 41)
    weight = (torch.randn(512, 384, 1, 1, device='cuda') / 16).to(dtype)
    bias = torch.randn(512, device='cuda').to(dtype)
    pre = F.conv2d(torch.cat((a, b), 1).double(), weight.double(),
                   bias.double())
    layers = pointwise_gemm._linear_gelu_by_layers(a, b, weight, bias)
    kernel = pointwise_gemm._linear_gelu_by_triton(a, b, weight, bias, True)
    assert kernel.inputs is None
    for expected, ours, theirs in ((pre, kernel.pre_activation,
                                    layers.pre_activation),
                                   (F.gelu(pre), kernel.out, layers.out)):
        assert ours.dtype == dtype
        assert ours.is_contiguous(memory_format=torch.channels_last)
        error, layers_error = ((t.double() - expected).abs().max()
                               for t in (ours, theirs))
        assert error <= 1.5 * layers_error, (error, layers_error)
    chosen = pointwise_gemm.pointwise_linear_gelu(a, b, weight, bias, True)
    torch.testing.assert_close(chosen.out.double(), F.gelu(pre), rtol=2e-2,
                               atol=2e-2)
    assert len(pointwise_gemm._FASTEST_LINEAR_GELU) >= 1  # timed once


def test_amp_block_gradients_with_fc1_and_gelu_in_one_kernel(monkeypatch):
    """The recipe's memory-efficient block under fp16 autocast, prepared
    (GEMMs, channels_last), with each level MLP's fc1 and GELU in Triton's
    kernel (no concatenation): gradients as close to float64 as with the
    layers."""
    from mmseg_wavemix.models.accel import pointwise_gemm
    torch.manual_seed(0)
    block = WaveMixBlock(64, level=3, memory_efficient=True)
    for norm in block.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 64, 64, 96)
    weight = torch.randn(2, 64, 64, 96)

    def grads(model, x, autocast):
        x = x.detach().requires_grad_()
        with torch.autocast('cuda', dtype=torch.float16, enabled=autocast):
            out = model(x)
        (out.double() * weight.to(x.device)).sum().backward()
        return [x.grad, *(p.grad for p in model.parameters())]

    exact = grads(copy.deepcopy(block).double(), x.double(), False)

    def run(forced):
        monkeypatch.setattr(
            pointwise_gemm, 'fastest', lambda calls, *args, **kwargs: forced
            if forced in calls else next(iter(calls)))
        model = prepare_for_training(copy.deepcopy(block), 'cuda')
        return [g.cpu() for g in grads(
            model, x.cuda().contiguous(memory_format=torch.channels_last),
            True)]

    layers, ours = run('layers'), run('triton')
    names = ['x', *(n for n, _ in block.named_parameters())]
    for name, a, b, c in zip(names, ours, layers, exact):
        if name.endswith('upsample.bias'):  # BN follows: true grad 0
            continue
        error, layers_error = ((t.double() - c).abs().max() for t in (a, b))
        assert error <= 2 * layers_error + 1e-4 * c.abs().max(), name


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_focal_loss_passes_on_cuda_equal_float64_autograd(dtype,
                                                          channels_last):
    """The focal loss's log-probability of the label and its gradient (one
    Triton pass each) at the recipe's 19 classes."""
    from mmseg_wavemix.ops import log_softmax_gather as ops

    from .test_ops import test_log_softmax_gather as reference
    tolerances = reference.TOLERANCES[dtype]
    logits = (4 * torch.randn(2, 19, 300, 500, device='cuda')).to(dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 19, (2, 300, 500), device='cuda')
    grad = torch.randn(2, 300, 500, device='cuda')
    assert ops.applies(logits, labels)
    expected, expected_grad = reference.float64_reference(
        logits, labels, grad)
    torch.testing.assert_close(
        ops.log_softmax_gather(logits, labels).double(), expected,
        **tolerances)
    grad_logits = ops.log_softmax_gather_backward(grad, logits, labels)
    assert grad_logits.dtype == dtype
    assert grad_logits.stride() == logits.stride()
    torch.testing.assert_close(grad_logits.double(), expected_grad,
                               **tolerances)


@pytest.mark.parametrize('channels_last', [False, True])
def test_pixel_counts_on_cuda_are_argmax_counts(channels_last):
    """The heads' accuracy counts (one Triton pass) at the recipe's 19
    classes, over pixels with tied largest logits and unlabelled ones."""
    from mmseg_wavemix.ops import accuracy
    logits = torch.randint(0, 4, (2, 19, 300, 500), device='cuda').half()
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 19, (2, 300, 500), device='cuda')
    labels[torch.rand(2, 300, 500, device='cuda') < 0.1] = 255
    assert accuracy.applies(logits, labels)
    correct, labelled = accuracy.correct_and_labelled(logits, labels, 255)
    valid = labels != 255
    assert labelled.item() == valid.sum().item()
    assert correct.item() == ((logits.argmax(1) == labels) &
                              valid).sum().item()


def test_cuda_graphs_give_the_eager_logits(monkeypatch):
    """prepare_for_inference's CUDA graphs compute the eager model's logits,
    one graph per input size, in fresh tensors, also with autocast entered
    once around several calls (its weight-cast cache must not reach the
    recording)."""
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)  # test.py
    model = _demo_model()
    eager = prepare_for_inference(copy.deepcopy(model), cuda_graphs=False)
    graphed = prepare_for_inference(copy.deepcopy(model))
    big = torch.randn(1, 3, 256, 512, device='cuda')
    small = torch.randn(2, 3, 128, 256, device='cuda')
    inputs = [big, small, big * 0.5, small.flip(-1)]
    with logged_messages() as logged, torch.no_grad(), \
            torch.autocast('cuda', dtype=torch.float16):
        outs = [graphed(x, mode='tensor') for x in inputs]
        refs = [eager(x, mode='tensor') for x in inputs]
    assert len(graphed.backbone.forward.graphs) == 2
    assert len(graphed.decode_head.forward.graphs) == 2
    # each recording, as it starts (the user's progress) and ends; the kernel
    # tuners the first recording runs log their choices between these
    recordings = [m for m in logged if m.startswith('CUDA graphs')]
    assert [m.split(' for ')[0].split(' in ')[0] for m in recordings] == [
        'CUDA graphs: recording the backbone',
        'CUDA graphs: recorded the backbone',
        'CUDA graphs: recording the decode_head',
        'CUDA graphs: recorded the decode_head'
    ] * 2
    assert 'inputs 1x3x256x512 (a first call' in recordings[0]
    for out, ref in zip(outs, refs):  # the first outputs were not replaced
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    with torch.no_grad():  # fp32: another signature
        torch.testing.assert_close(
            graphed(big, mode='tensor'), eager(big, mode='tensor'),
            rtol=1e-4, atol=1e-4)


def test_compiled_cuda_graphs_replay_the_compiled_model(monkeypatch):
    """With ``compile`` the graphs replay exactly what the compiled model
    computes, and that agrees with the eager model (Inductor keeps fused
    intermediates in float32 and cuDNN may pick other algorithms: its
    logits differ from eager fp16 by more than rounding, so the argmax and
    the scale of the differences are checked)."""
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)
    model = _demo_model()
    eager = prepare_for_inference(copy.deepcopy(model), cuda_graphs=False)
    compiled = copy.deepcopy(eager)
    compiled.backbone.compile(dynamic=False)
    compiled.decode_head.compile(dynamic=False)
    graphed = prepare_for_inference(copy.deepcopy(model), compile=True)
    inputs = torch.randn(1, 3, 256, 512, device='cuda')
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        ref = eager(inputs, mode='tensor')
        expected = compiled(inputs, mode='tensor')
        out = graphed(inputs, mode='tensor')
        again = graphed(inputs * 0.5, mode='tensor')
        expected_again = compiled(inputs * 0.5, mode='tensor')
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(again, expected_again, rtol=1e-3, atol=1e-3)
    assert (out - ref).abs().max() <= 2e-2 * ref.abs().max()
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.995, agreement


# 'auto' runs every upsampling kernel (in bf16 too) before it keeps one
@pytest.mark.parametrize('dtype,upsample_kernel', [
    (torch.float16, 'auto'), (torch.bfloat16, 'auto'),
    (torch.float16, 'triton'), (torch.float16, 'triton_tma'),
    (torch.float16, 'cudnn')
])
def test_fused_level_mlps_are_as_close_to_float64_as_the_layers(
        dtype, upsample_kernel):
    """The Triton level MLPs at WaveMix's width (every tile size the tuner
    may pick), channels_last: the block's output as close to float64 as
    the plain layers' in ``dtype``."""
    torch.manual_seed(0)
    block = WaveMixBlock(256, level=4)
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    block = fuse_norm_layers(block.eval())
    exact = copy.deepcopy(block).double()
    layers = copy.deepcopy(block).cuda().to(memory_format=torch.channels_last)
    fused = fuse_level_mlps(copy.deepcopy(layers), upsample_kernel)
    assert all(isinstance(m, FusedLevelMLP) for m in fused.mlps)
    x = torch.randn(2, 256, 64, 128, dtype=torch.float64)
    device_x = x.to('cuda', torch.float32).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        expected = exact(x)
        with torch.autocast('cuda', dtype=dtype):
            ref = layers(device_x)
            out = fused(device_x)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    layers_error = (ref.cpu().double() - expected).abs().max()
    error = (out.cpu().double() - expected).abs().max()
    assert error <= 1.5 * layers_error, (error, layers_error)


@pytest.mark.parametrize('upsample_kernel',
                         ['auto', 'triton', 'triton_tma', 'cudnn'])
def test_fused_head_upsamplings_are_as_close_to_float64_as_the_layers(
        upsample_kernel):
    """WaveMix-256's decode head upsamplings in fp16 (the second with the
    19 classes folded in: rows the TMA cannot take), channels_last."""
    torch.manual_seed(0)
    for channels, out_channels, size in ((256, 128, (32, 64)),
                                         (128, 19, (64, 128))):
        conv = nn.ConvTranspose2d(channels, out_channels, 4, 2, 1).eval()
        fused = FusedUpsample.from_conv(copy.deepcopy(conv).cuda(),
                                        upsample_kernel)
        x = torch.randn(1, channels, *size, dtype=torch.float64)
        device_x = x.to('cuda', torch.float16).contiguous(
            memory_format=torch.channels_last)
        with torch.no_grad():
            expected = copy.deepcopy(conv).double()(x)
            layer = copy.deepcopy(conv).cuda().half()(device_x)
            out = fused.half()(device_x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        layer_error = (layer.cpu().double() - expected).abs().max()
        error = (out.cpu().double() - expected).abs().max()
        assert error <= 1.5 * layer_error, (out_channels, error, layer_error)


def test_tma_transposed_convolution_in_every_tile_config():
    """The TMA kernel at WaveMix-256's width, each config its tuner tries,
    as close to float64 as the other Triton kernel (a config that reads a
    wrong or stale block is off by far more than fp16 rounding)."""
    major, minor = torch.cuda.get_device_capability()
    if major < 9:
        pytest.skip('the TMA needs compute capability 9.0 (H100) or later; '
                    f'this GPU has {major}.{minor}')
    from mmseg_wavemix.ops import level_mlp_triton
    assert level_mlp_triton.TensorDescriptor is not None, \
        'Triton >= 3.4 has host tensor descriptors'
    x = torch.randn(1, 256, 24, 40, device='cuda').half().contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 4, 4, device='cuda') / 32
    bias = torch.randn(256, device='cuda')
    residual = torch.randn(1, 256, 48, 80, device='cuda').half().contiguous(
        memory_format=torch.channels_last)
    packed = level_mlp_triton.pack_conv_transpose_weight(weight).half()
    assert level_mlp_triton.tma_applies(x, packed)
    # the weight as the kernels compute with it: rounded to fp16
    expected = torch.nn.functional.conv_transpose2d(
        x.double(), weight.half().double(), bias.double(), stride=2,
        padding=1) + residual.double()
    # the other Triton kernel's error: fp16 rounding of the same product
    plain_error = (level_mlp_triton.conv_transpose_k4s2(
        x, packed, bias, residual).double() - expected).abs().max()
    for config in level_mlp_triton._tma_configs():
        out = level_mlp_triton.conv_transpose_k4s2_tma(
            x, packed, bias, residual,
            config=dict(config.kwargs, num_warps=config.num_warps,
                        num_stages=config.num_stages))
        error = (out.double() - expected).abs().max()
        assert error <= 1.5 * plain_error, (str(config), error, plain_error)


@pytest.mark.parametrize('size', [(8, 16), (16, 32), (32, 64), (64, 128)])
def test_tma_transposed_convolution_is_deterministic_and_as_close(size):
    """At the sizes of WaveMix-256's level MLPs at 1024x2048 (256 channels
    to 128, the coarser levels'), the TMA kernel gives the same output at
    every call, as close to float64 as the other Triton kernel's. (Session
    14's level-MLP benchmark at the 64x128 output: the TMA kernel 1.0e-2
    from the layers, 8.3e-3 when 'auto' ran the same kernel, the others
    6.1e-5.)"""
    major, minor = torch.cuda.get_device_capability()
    if major < 9:
        pytest.skip('the TMA needs compute capability 9.0 (H100) or later; '
                    f'this GPU has {major}.{minor}')
    from mmseg_wavemix.ops import level_mlp_triton
    torch.manual_seed(0)
    x = torch.randn(1, 256, *size, device='cuda').half().contiguous(
        memory_format=torch.channels_last)
    weight = (torch.randn(256, 128, 4, 4, device='cuda') / 32).half()
    bias = torch.randn(128, device='cuda')
    residual = torch.randn(1, 128, 2 * size[0], 2 * size[1],
                           device='cuda').half().contiguous(
                               memory_format=torch.channels_last)
    packed = level_mlp_triton.pack_conv_transpose_weight(weight)
    expected = F.conv_transpose2d(x.double(), weight.double(),
                                  bias.double(), stride=2,
                                  padding=1) + residual.double()
    outs = [level_mlp_triton.conv_transpose_k4s2_tma(x, packed, bias,
                                                     residual)
            for _ in range(3)]
    assert all(torch.equal(out, outs[0]) for out in outs[1:])
    plain = level_mlp_triton.conv_transpose_k4s2(x, packed, bias, residual)
    error, plain_error = ((t.double() - expected).abs().max()
                          for t in (outs[0], plain))
    assert error <= 1.5 * plain_error, (error, plain_error)


def test_fused_level_mlps_in_cuda_graphs_agree_in_fp16():
    model = _demo_model()
    expected_model = prepare_for_inference(copy.deepcopy(model),
                                           fuse_mlp=False)
    fused = prepare_for_inference(copy.deepcopy(model))  # fused by default
    assert any(isinstance(m, FusedLevelMLP) for m in fused.modules())
    assert not any(
        isinstance(m, FusedLevelMLP) for m in expected_model.modules())
    compiled = prepare_for_inference(copy.deepcopy(model), compile=True)
    assert not any(isinstance(m, FusedLevelMLP) for m in compiled.modules())
    inputs = torch.randn(1, 3, 256, 512, device='cuda')
    with torch.no_grad():
        exact = model(inputs, mode='tensor').argmax(1)
        with torch.autocast('cuda', dtype=torch.float16):
            expected = expected_model(inputs, mode='tensor')
            out = fused(inputs, mode='tensor')
            again = fused(inputs, mode='tensor')  # replayed
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert (out - expected).abs().max() <= 1e-2 * expected.abs().max()
    agreement = (out.argmax(1) == exact).float().mean().item()
    assert agreement >= 0.995, agreement


@pytest.mark.parametrize('options', ['fp16,fast_train',
                                     'fp16,fast_train,cuda_graphs'])
def test_peak_memory_of_both_modes_in_one_process(options):
    """tools/benchmark.py measures an entry's inference and training peaks
    in one fresh process on CUDA: the training peak after the inference is
    the one measured alone (the allocator's cache emptied between). Training
    as CUDA graphs has a process of its own (session 26, H100: recorded
    after inference they held 574 MB against 424 MB alone); its peak is
    then the same in two processes."""
    from mmseg_wavemix.utils.benchmark import parse_entry, peak_memory

    from .test_tools.demo_data import tool_module
    tool = tool_module('benchmark.py')
    config = f'{REPO_ROOT}/configs/wavemix/wavemix_16x2_l4_cityscapes-demo.py'
    args = tool.parse_args([config, '--device', 'cuda', '--shape', '256',
                            '512', '--batch', '2', '--train'])
    entry = parse_entry(f'{config}@{options}', args)
    both = peak_memory(entry, args, ['inference', 'train'])
    alone = peak_memory(entry, args, ['train'])
    assert both['inference']['peak_memory_mb'] > 0
    assert both['train']['peak_memory_mb'] == pytest.approx(
        alone['train']['peak_memory_mb'], rel=0.1), (both, alone)
    # a replayed step of the graphs holds at most what their recording did
    replay = both['train'].get('replay_peak_memory_mb')
    assert (replay is not None) == ('cuda_graphs' in options)
    assert replay is None or 0 < replay <= both['train']['peak_memory_mb']


@pytest.mark.parametrize('pinned', [False, True])
def test_uint8_labels_become_int64_on_the_device(pinned):
    """The recipe's preprocessor copies uint8 labels (pinned where the data
    loader pins, then without waiting) and makes them int64 on the GPU: the
    CPU's batch."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from .test_datasets.test_uint8_labels import batch
    from .test_tools.demo_data import MAIN_CONFIG
    cfg = Config.fromfile(MAIN_CONFIG).model.data_preprocessor
    data = batch(torch.uint8, ((64, 128), (64, 128)))
    if pinned:
        data['inputs'] = [t.pin_memory() for t in data['inputs']]
        cfg.non_blocking = True
    expected = MODELS.build(cfg)(copy.deepcopy(data), True)
    got = MODELS.build(cfg).cuda()(data, True)
    torch.testing.assert_close(got['inputs'].cpu(), expected['inputs'])
    for a, b in zip(got['data_samples'], expected['data_samples']):
        assert a.gt_sem_seg.data.device.type == 'cuda'
        assert a.gt_sem_seg.data.dtype == torch.int64
        torch.testing.assert_close(a.gt_sem_seg.data.cpu(), b.gt_sem_seg.data)


def test_resumed_training_goes_on_with_the_cuda_generator(tmp_path):
    """FastResumeIterBasedTrainLoop records the current device's generator
    with the others: a resumed run's draws on the GPU (dropout) are those of
    the run without interruption."""
    from .test_engine import test_fast_resume_loop as loop_tests

    class CUDARandomModel(loop_tests.RandomToyModel):

        def __init__(self):
            super().__init__()
            self.cuda_draws = []

        def forward(self, inputs, data_samples=None, mode='tensor'):
            if mode == 'loss':
                assert inputs.is_cuda
                self.cuda_draws.append(
                    torch.rand((), device=inputs.device).item())
            return super().forward(inputs, data_samples, mode)

    whole, _, resumed = loop_tests.train_then_resume(
        tmp_path, 'FastResumeIterBasedTrainLoop', loop_tests.SHUFFLED,
        seed=0, model_type=CUDARandomModel)
    draws = whole.runner_model.cuda_draws
    assert len(set(draws)) == loop_tests.MAX_ITERS
    assert resumed.model.cuda_draws == draws[loop_tests.RESUME_AT:]


def test_recipe_trains_graphed_through_the_switch_and_resumes(tmp_path):
    """``tools/train.py`` on the recipe (a tiny model; CUDA graphs and pinned
    batches by default since session 37): the graphed steps, on both sides
    of the optimizer switch, give eager training's weights up to float
    rounding, the graphs recorded once; and a run resumed on the GPU from a
    checkpoint before the switch ends with those weights too (in session 37
    a resumed run stopped at its first step: the random generators' states,
    which mmengine's resume loads onto the GPU, were put back as such)."""
    from mmseg_wavemix.compat import mmengine_checkpoint_loading

    from .test_tools.demo_data import MAIN_CONFIG, data_root_options
    from .test_tools.test_train_and_test_tools import TINY_MODEL
    env = fresh_process_env()

    def tool(*args):
        done = subprocess.run([sys.executable, *map(str, args)], env=env,
                              capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    root = tmp_path / 'data'
    tool('tools/dataset_converters/make_demo_cityscapes.py', root,
         '--num-train', 4, '--num-val', 2, '--size', 128, 256)
    tool('tools/dataset_converters/cityscapes.py', root, '--nproc', 2)

    def train(name, iters, *args):
        # AdamW for iterations 1-4, SGD for 5-6 (at a rate that moves the
        # weights as much); every checkpoint kept
        return tool(
            'tools/train.py', MAIN_CONFIG, '--work-dir', tmp_path / name,
            *args, '--cfg-options', *TINY_MODEL, *data_root_options(root),
            'train_dataloader.batch_size=2', 'randomness.seed=0',
            f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=6',
            'default_hooks.checkpoint.interval=2',
            'default_hooks.checkpoint.max_keep_ckpts=-1',
            'default_hooks.logger.interval=1',
            f'custom_hooks.0.final_iters={max(iters - 4, 0)}',
            'custom_hooks.0.optimizer.lr=0.1')

    eager = train('eager', 6, '--no-cuda-graphs')
    graphed = train('graphed', 6)
    assert 'CUDA graphs' not in eager
    assert graphed.count('CUDA graphs: recorded the training backbone and '
                         'decode_head') == 1, graphed[-3000:]
    assert 'cannot be recorded' not in graphed
    for log in (eager, graphed):
        assert 'OptimizerSwitchHook: switched the optimizer from AdamW to ' \
            'SGD' in log
    train('resumed', 4)
    resumed = train('resumed', 6, '--resume')
    assert 'Iter(train) [5/6]' in resumed and 'Iter(train) [1/6]' not in \
        resumed
    assert 'OptimizerSwitchHook: switched the optimizer from AdamW to SGD' \
        in resumed

    def weights(name, iteration):
        with mmengine_checkpoint_loading():
            state = torch.load(tmp_path / name / f'iter_{iteration}.pth',
                               map_location='cpu')['state_dict']
        return {k: v.double() for k, v in state.items()}

    def distance(a, b, c=None, d=None):
        """The norm of a - b, or of (a - b) - (c - d), over all tensors."""
        return sum(((a[k] - b[k]) - (0 if c is None else c[k] - d[k])
                    ).square().sum() for k in a).sqrt()

    # each process picks its kernels by timing (cuDNN's too), and AdamW's
    # steps (about the learning rate for any gradient) carry the rounding:
    # each side of the switch agrees to a fifth of its steps' change, where
    # a lost step would be half of it or more
    eager = {i: weights('eager', i) for i in (2, 4, 6)}
    adamw, sgd = (distance(eager[4], eager[2]),
                  distance(eager[6], eager[4]))
    assert adamw > 0 and sgd > 0
    for name in ('graphed', 'resumed'):
        got = {i: weights(name, i) for i in (4, 6)}
        assert all(v.isfinite().all() for v in got[6].values()), name
        assert distance(got[4], eager[4]) <= 0.2 * adamw, name
        assert distance(got[6], got[4], eager[6], eager[4]) <= 0.2 * sgd, \
            name
