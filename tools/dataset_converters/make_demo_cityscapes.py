# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Generate a small, deterministic dataset in the raw Cityscapes format.

Real Cityscapes cannot be downloaded everywhere (it needs an account), so the
demo and the tests use street-like scenes drawn from polygons with real
Cityscapes label names, laid out like the real data::

    ROOT/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json

Convert it exactly like the real dataset::

    python tools/dataset_converters/cityscapes.py ROOT

Each class has its own colour, texture and brightness range, and the layout
(sky above buildings above the road, cars on the road, people on the
sidewalks) varies per image, so a model has something real to learn.

Example:
    python tools/dataset_converters/make_demo_cityscapes.py \
        data/cityscapes_demo
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from mmengine.utils import track_progress
from PIL import Image, ImageDraw

SPLITS = {'train': ('aachen', 'bochum'), 'val': ('frankfurt', )}
# Per-class texture: (period in pixels, amplitude) of stripes; 0 = flat.
TEXTURES = {
    'road': (0, 0), 'sidewalk': (16, 18), 'building': (24, 30),
    'vegetation': (6, 40), 'terrain': (10, 22), 'sky': (0, 0),
    'person': (4, 25), 'car': (12, 20), 'pole': (0, 0),
    'traffic sign': (0, 0),
}


def _box(x0, y0, x1, y1):
    return [[int(x0), int(y0)], [int(x1), int(y0)], [int(x1), int(y1)],
            [int(x0), int(y1)]]


def make_scene(rng: np.random.RandomState, height: int, width: int) -> list:
    """Polygons of one street scene, in drawing order (later on top)."""
    objects = []

    def add(label, polygon):
        objects.append(dict(label=label, polygon=polygon))

    horizon = int(height * rng.uniform(0.35, 0.5))
    add('sky', _box(0, 0, width - 1, horizon))
    add('terrain', _box(0, horizon, width - 1, height - 1))
    x = 0
    while x < width:  # a row of buildings and trees along the horizon
        w = int(width * rng.uniform(0.08, 0.2))
        top = int(horizon * rng.uniform(0.15, 0.7))
        add('vegetation' if rng.rand() < 0.3 else 'building',
            _box(x, top, min(x + w, width - 1), horizon + height // 20))
        x += w
    vanish = width * rng.uniform(0.35, 0.65)
    road_left, road_right = width * rng.uniform(-0.2, 0.2), \
        width * rng.uniform(0.8, 1.2)
    walk = width * 0.18
    add('sidewalk', [[int(road_left - walk), height - 1],
                     [int(vanish - 30), horizon + 1],
                     [int(vanish + 30), horizon + 1],
                     [int(road_right + walk), height - 1]])
    add('road', [[int(road_left), height - 1], [int(vanish - 10), horizon + 1],
                 [int(vanish + 10), horizon + 1],
                 [int(road_right), height - 1]])
    for _ in range(rng.randint(1, 4)):  # cars on the road, bigger when near
        depth = rng.uniform(0.25, 1.0)
        cy = horizon + depth * (height - horizon) * 0.9
        cw, ch = width * 0.22 * depth, height * 0.16 * depth
        cx = vanish + (rng.uniform(-0.3, 0.3) * width) * depth
        add('car', _box(cx - cw / 2, cy - ch, cx + cw / 2, cy))
    for _ in range(rng.randint(1, 4)):  # people and poles on the sidewalks
        depth = rng.uniform(0.3, 1.0)
        side = rng.choice([-1, 1])
        px = vanish + side * (0.55 * width * depth + walk * 0.3 * depth)
        py = horizon + depth * (height - horizon) * 0.95
        ph, pw = height * 0.3 * depth, width * 0.025 * depth
        add('person', [[int(px - pw), int(py)], [int(px - pw * 0.7), int(
            py - ph * 0.85)], [int(px), int(py - ph)],
                       [int(px + pw * 0.7), int(py - ph * 0.85)],
                       [int(px + pw), int(py)]])
    for _ in range(rng.randint(0, 3)):
        px = rng.uniform(0.05, 0.95) * width
        top = horizon * rng.uniform(0.3, 0.8)
        add('pole', _box(px, top, px + width * 0.006, height * 0.8))
        add('traffic sign', _box(px - width * 0.015, top,
                                 px + width * 0.021, top + height * 0.05))
    return objects


def render(rng: np.random.RandomState, objects: list, height: int,
           width: int) -> np.ndarray:
    """RGB image of the scene: class colour, brightness, texture, noise."""
    image = np.zeros((height, width, 3), np.float32)
    for obj in objects:
        mask_img = Image.new('L', (width, height), 0)
        ImageDraw.Draw(mask_img).polygon(
            [tuple(p) for p in obj['polygon']], fill=1)
        # the object's pixels only (whole-image layers took 3.5x the time)
        ys, xs = np.nonzero(np.asarray(mask_img, bool))
        colour = np.array(name2label[obj['label']].color, np.float32)
        colour = colour * rng.uniform(0.7, 1.15) + rng.uniform(-12, 12, 3)
        period, amplitude = TEXTURES[obj['label']]
        pixels = np.broadcast_to(colour, (len(ys), 3))
        if period:
            stripes = np.sin((xs + ys * rng.uniform(-1, 1)) * 2 * np.pi /
                             period)
            pixels = pixels + amplitude * stripes[:, None]
        image[ys, xs] = pixels
    # Smooth illumination gradient and sensor noise.
    rows = np.arange(height)[:, None]
    image += (rows / height * rng.uniform(-30, 30))[..., None]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_sample(task):
    root, split, city, index, height, width, seed = task
    rng = np.random.RandomState(seed)
    stem = f'{city}_{index:06d}_000019'
    objects = make_scene(rng, height, width)
    img_dir = osp.join(root, 'leftImg8bit', split, city)
    gt_dir = osp.join(root, 'gtFine', split, city)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    Image.fromarray(render(rng, objects, height, width)).save(
        osp.join(img_dir, f'{stem}_leftImg8bit.png'))
    with open(osp.join(gt_dir, f'{stem}_gtFine_polygons.json'), 'w') as f:
        json.dump(dict(imgHeight=height, imgWidth=width, objects=objects), f)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate small Cityscapes-format demo data')
    parser.add_argument('root', help='output Cityscapes root directory')
    parser.add_argument(
        '--num-train', type=int, default=12, help='train images')
    parser.add_argument('--num-val', type=int, default=4, help='val images')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=(1024, 2048),
        metavar=('H', 'W'),
        help='image size (default: Cityscapes 1024 2048)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        raise SystemExit('error: --num-train and --num-val must be >= 1')
    height, width = args.size
    tasks = []
    for split, count in (('train', args.num_train), ('val', args.num_val)):
        cities = SPLITS[split]
        for i in range(count):
            seed = args.seed * 100003 + len(tasks)
            tasks.append((args.root, split, cities[i % len(cities)], i,
                          height, width, seed))
    track_progress(write_sample, tasks)
    print(f'\nwrote {args.num_train} train and {args.num_val} val images '
          f'({height}x{width}) to {args.root}')


if __name__ == '__main__':
    main()
