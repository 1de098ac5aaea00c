# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Export a segmentor to ONNX (its logits, or the class map with
``--argmax``), optionally verified with onnxruntime on CPU.

Needs ``pip install -e .[deploy]`` (onnx, onnxscript, onnxruntime). The
graph is made by PyTorch's exporter (torch.export); the Haar transform
becomes plain ONNX arithmetic.

Example:
    python tools/deployment/pytorch2onnx.py \
        configs/wavemix/wavemix_256x16_l4_cityscapes.py CKPT \
        --out wavemix.onnx --shape 512 1024 --dynamic --verify
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import time

import torch
from mmengine.config import DictAction

import mmseg_wavemix  # noqa: F401  (registers the plugin)
from mmseg_wavemix.models.accel import prepare_for_inference
from mmseg_wavemix.utils.checkpoints import check_fits, load_state_dict
from mmseg_wavemix.utils.checks import InputError, describe
from mmseg_wavemix.utils.cli import (check_model, input_errors_in_one_line,
                                     positive_int, read_config)

# Dynamic sizes are multiples of this (stride 32 backbones; WaveMix pads its
# blocks' input to multiples of 2 ** level after a stride-4 stem: 64).
SIZE_MULTIPLE = 64
# PyTorch's exporter writes opset 18 and converts to others; below 17 the
# conversion fails for ops the models use.
MIN_OPSET = 17
MAX_ABS_DIFF = 1e-4
MIN_ARGMAX_AGREEMENT = 0.999


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a segmentor to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--shape', type=positive_int, nargs=2,
                        default=(512, 1024), metavar=('H', 'W'),
                        help='input size of the export (and of --verify)')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help=f'dynamic batch, height and width (multiples of '
        f'{SIZE_MULTIPLE})')
    parser.add_argument('--argmax', action='store_true',
                        help='output the class map instead of the logits')
    parser.add_argument('--fp16', action='store_true',
                        help='export in float16 (for GPU runtimes)')
    parser.add_argument('--opset', type=int, default=18,
                        help='ONNX opset (default: 18)')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare onnxruntime (CPU) with PyTorch and print both '
        'latencies')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings (key=value)')
    return parser.parse_args(argv)


class Exported(torch.nn.Module):
    """The segmentor's logits (or their argmax) of a batch of normalised
    images, what the ONNX graph computes."""

    def __init__(self, segmentor, argmax: bool):
        super().__init__()
        self.segmentor = segmentor
        self.argmax = argmax

    def forward(self, images):
        logits = self.segmentor(images, mode='tensor')
        return logits.argmax(dim=1) if self.argmax else logits


def build(args):
    """The model of the config with the checkpoint's weights (checked to
    fit), in eval mode."""
    cfg = read_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = check_model(cfg)
    state_dict = load_state_dict(args.checkpoint)
    check_fits(model, state_dict, args.checkpoint)
    model.load_state_dict(state_dict, strict=False)  # extras ignored
    return Exported(model.eval(), args.argmax)


def export(model, args):
    import onnxscript  # noqa: F401  (the exporter needs it)
    dtype = torch.float16 if args.fp16 else torch.float32
    model = model.to(dtype)
    # a batch of 2: torch.export fixes dimensions of size 1
    inputs = torch.randn(
        2 if args.dynamic else 1, 3, *args.shape, dtype=dtype)
    dynamic_shapes = None
    if args.dynamic:
        if any(s % SIZE_MULTIPLE for s in args.shape):
            raise InputError(f'--dynamic needs a --shape of multiples of '
                             f'{SIZE_MULTIPLE}, got {tuple(args.shape)}')
        h = torch.export.Dim('h', min=1, max=256)
        w = torch.export.Dim('w', min=1, max=256)
        dynamic_shapes = {
            'images': {
                0: torch.export.Dim('batch', min=1, max=64),
                2: SIZE_MULTIPLE * h,
                3: SIZE_MULTIPLE * w
            }
        }
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, (inputs, ),
            args.out,
            dynamo=True,
            opset_version=args.opset,
            input_names=['images'],
            output_names=['classes' if args.argmax else 'logits'],
            dynamic_shapes=dynamic_shapes)
    print(f'exported {args.out} (opset {args.opset}, '
          f'{"dynamic" if args.dynamic else "x".join(map(str, args.shape))}'
          f' input)')


def interleaved_medians(steps: dict, repeat: int = 3) -> dict:
    """Median seconds of each step, rounds interleaved across the steps
    (after one warm-up round), so that the ratios hold on a noisy
    machine."""
    times = {name: [] for name in steps}
    for round_ in range(repeat + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def verify(model, args):
    """onnxruntime against PyTorch on random images and on an image with
    large uniform regions (as real scenes): logits within
    :data:`MAX_ABS_DIFF`, argmax agreement >= :data:`MIN_ARGMAX_AGREEMENT`
    (fp32); latencies of both."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    # idle threads that spin would slow down PyTorch's timing next to them
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    session = ort.InferenceSession(
        args.out, options, providers=['CPUExecutionProvider'])
    dtype = torch.float16 if args.fp16 else torch.float32
    h, w = args.shape
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randn(1, 3, h // 16, w // 16, generator=generator)
    images = {
        'random': torch.randn(1, 3, h, w, generator=generator),
        'regions': torch.nn.functional.interpolate(blocks, size=(h, w)),
    }
    for name, image in images.items():
        image = image.to(dtype)
        with torch.no_grad():
            expected = model(image).float()
        output = torch.from_numpy(
            session.run(None, {'images': image.numpy()})[0]).float()
        if args.argmax:
            diff, agreement = 0., (output == expected).float().mean().item()
        else:
            diff = (output - expected).abs().max().item()
            agreement = (output.argmax(1) == expected.argmax(1)).float().mean(
            ).item()
        print(f'{name} {h}x{w}: max |onnxruntime - PyTorch| = {diff:.2e}, '
              f'argmax agreement {100 * agreement:.3f}%')
        if not args.fp16 and (diff > MAX_ABS_DIFF
                              or agreement < MIN_ARGMAX_AGREEMENT):
            raise InputError(
                f'onnxruntime disagrees with PyTorch on the {name} image: '
                f'max |diff| {diff:.2e} (allowed {MAX_ABS_DIFF}), argmax '
                f'agreement {agreement:.4f} (needed {MIN_ARGMAX_AGREEMENT})')
    image = images['random'].to(dtype)
    fast = copy.deepcopy(model)
    prepare_for_inference(fast.segmentor)  # what tools/test.py --fast runs
    fast_image = image.contiguous(memory_format=torch.channels_last)
    feed = {'images': image.numpy()}
    with torch.no_grad():
        latency = interleaved_medians({
            'onnxruntime': lambda: session.run(None, feed),
            'PyTorch': lambda: model(image),
            'PyTorch --fast': lambda: fast(fast_image),
        })
    print(f'latency {h}x{w}, {torch.get_num_threads()} threads: ' + ', '.join(
        f'{name} {seconds:.3f} s' for name, seconds in latency.items()))


@input_errors_in_one_line
def main(argv=None):
    args = parse_args(argv)
    for module in ('onnx', 'onnxscript', 'onnxruntime'):
        try:
            __import__(module)
        except ImportError:
            raise InputError(f'{module} is not installed: pip install -e '
                             '.[deploy]')
    import onnx
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= args.opset <= max_opset:
        raise InputError(f'opset {args.opset} is not supported: use '
                         f'{MIN_OPSET} to {max_opset}')
    model = build(args)
    try:
        export(model, args)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f'export failed: {describe(e)}') from e
    if args.verify:
        verify(model, args)


if __name__ == '__main__':
    main()
