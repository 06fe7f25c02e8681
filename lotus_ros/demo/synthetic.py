"""
Deterministic synthetic camera + LiDAR sequences with exact ground truth.

The demo, the bag tools and the node tests need images whose true metric depth is known, without
downloads. A short camera path through a textured room with boxes (or an outdoor scene with far
buildings and sky) is ray cast with numpy. Everything is in the camera optical frame of REP 103/118
(x right, y down, z forward); depth is Z along the optical axis, not the range along the ray.
Pixel (u, v) has its centre at integer coordinates, as in ROS CameraInfo and OpenCV.
`write_sequence_bag` stores a sequence as a rosbag2 bag (camera, camera_info, LiDAR depth).

The world frame uses the same axis directions as the optical frame at the start of the path
(y down), so the floor of the room is the plane y = FLOOR_Y.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.typesys.store import Typestore

from lotus_ros.bags import bag_io
from lotus_ros.core.geometry import pinhole_fields
from lotus_ros.core.stamps import seconds_to_ns

FLOOR_Y = 1.0
"""World y of the room floor (the camera path is about 1 m above it, y points down)."""
ROOM_LO = np.array([-3.0, -1.6, -2.0])
ROOM_HI = np.array([3.0, FLOOR_Y, 6.0])
GROUND_Y = 1.5
"""World y of the outdoor ground plane."""
GROUND_RANGE = 150.0
"""The outdoor ground ends this far from the start (beyond it the ray sees sky, depth +inf)."""

LIDAR_LINES = 16
LIDAR_ELEVATION_DEG = (-15.0, 15.0)
LIDAR_AZIMUTH_STEP_DEG = 0.2
LIDAR_MAX_RANGE = 100.0
LIDAR_NOISE_REL = 0.01
LIDAR_NOISE_ABS = 0.01
LIDAR_DROPOUT = 0.02
LIDAR_BLEED_PROB = 0.5
LIDAR_EDGE_REL = 0.1
LIDAR_FOOTPRINT_PX = 2

LABEL_SKY = 0
LABEL_FLOOR = 1
LABEL_CEILING = 2
LABEL_WALL = 3
LABEL_BOX = 10
"""Surface labels: walls are LABEL_WALL + (0: -x, 1: +x, 2: -z, 3: +z), boxes LABEL_BOX + index."""


@dataclass
class SyntheticFrame:
    index: int
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    sparse_depth: np.ndarray
    k: np.ndarray
    width: int
    height: int
    pose: np.ndarray | None = None
    """4x4 camera-to-world transform (optical frame to world)."""
    normal: np.ndarray | None = None
    """HxWx3 float32 unit surface normals in the optical frame, facing the camera; NaN for sky."""
    labels: np.ndarray | None = None
    """HxW int16 surface labels (LABEL_*), so tests can pick pixels of a known plane."""


def intrinsics(width: int, height: int) -> np.ndarray:
    """Return the 3x3 K used for a resolution (square pixels, about 64 degrees horizontal FOV)."""
    f = 0.8 * width
    return np.array([[f, 0.0, (width - 1) / 2.0],
                     [0.0, f, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def camera_pose(s: float, scene: str) -> np.ndarray:
    """Return the camera-to-world pose at path parameter s in [0, 1] (smooth, a gentle sweep)."""
    reach = 1.0 if scene == 'room' else 4.0
    position = np.array([0.5 * np.sin(2 * np.pi * s), 0.05 * np.sin(4 * np.pi * s), reach * s])
    rotation = _rot_y(0.25 * np.sin(2 * np.pi * s)) @ _rot_x(-0.06 + 0.04 * np.cos(2 * np.pi * s))
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = position
    return pose


def _hash2(i: np.ndarray, j: np.ndarray, salt: float) -> np.ndarray:
    """Cheap deterministic per-cell value noise in [0, 1) (the classic sine hash)."""
    x = np.sin(i * 12.9898 + j * 78.233 + salt * 37.719) * 43758.5453
    return x - np.floor(x)


def _texture(a: np.ndarray, b: np.ndarray, salt: float) -> np.ndarray:
    """Return a brightness factor: checker tiles with blotches and fine grain, never constant."""
    checker = (np.floor(a / 0.5) + np.floor(b / 0.5)) % 2
    blotch = _hash2(np.floor(a * 3), np.floor(b * 3), salt)
    grain = _hash2(np.floor(a * 25), np.floor(b * 25), salt + 1.0)
    stripes = 0.5 + 0.5 * np.sin(7.0 * a + 3.0 * np.sin(2.0 * b) + salt)
    return 0.45 + 0.2 * checker + 0.15 * blotch + 0.1 * grain + 0.1 * stripes


@dataclass
class _Scene:
    kind: str
    boxes: list[tuple[np.ndarray, np.ndarray]]
    colours: np.ndarray
    salts: np.ndarray


def _make_scene(scene: str, seed: int) -> _Scene:
    rng = np.random.default_rng(seed)
    boxes = []
    if scene == 'room':
        spots = [(-2.0, 3.5), (1.6, 4.2), (-0.6, 5.0), (2.2, 2.2), (-2.3, 1.8)]
        for x, z in spots:
            half = rng.uniform(0.25, 0.5, size=3)
            centre = np.array([x + rng.uniform(-0.2, 0.2), FLOOR_Y - half[1],
                               z + rng.uniform(-0.2, 0.2)])
            boxes.append((centre - half, centre + half))
    else:
        for x, z in [(-6.0, 14.0), (5.0, 18.0), (-2.0, 26.0), (8.0, 30.0)]:
            half = np.array([rng.uniform(1.0, 2.0), rng.uniform(1.5, 4.0), rng.uniform(1.0, 2.0)])
            centre = np.array([x, GROUND_Y - half[1], z])
            boxes.append((centre - half, centre + half))
        for x in np.linspace(-60.0, 60.0, 7):
            half = np.array([8.0, rng.uniform(6.0, 15.0), 5.0])
            centre = np.array([x + rng.uniform(-3, 3), GROUND_Y - half[1], rng.uniform(70, 90)])
            boxes.append((centre - half, centre + half))
    n_surfaces = LABEL_BOX + len(boxes)
    colours = rng.uniform(0.35, 1.0, size=(n_surfaces, 3))
    salts = rng.uniform(0.0, 100.0, size=n_surfaces)
    return _Scene(scene, boxes, colours, salts)


def _cast(scene: _Scene, origin: np.ndarray, dirs: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Intersect rays o + t d with the scene.

    Returns t (inf for sky), the world normal facing the ray and the surface label. Because every
    ray direction has optical-frame z = 1, t is the optical-frame depth Z.
    """
    n = dirs.shape[0]
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / dirs
        t = np.full(n, np.inf)
        normal = np.zeros((n, 3))
        label = np.full(n, LABEL_SKY, dtype=np.int16)
        if scene.kind == 'room':
            # The camera is inside the room box: the ray leaves it through the nearest exit plane.
            exits = np.where(dirs > 0, (ROOM_HI - origin) * inv, (ROOM_LO - origin) * inv)
            exits[dirs == 0] = np.inf
            axis = np.argmin(exits, axis=1)
            t = exits[np.arange(n), axis]
            normal[np.arange(n), axis] = -np.sign(dirs[np.arange(n), axis])
            wall = LABEL_WALL + np.where(axis == 0, 0, 2) + (dirs[np.arange(n), axis] > 0)
            label = np.where(axis != 1, wall,
                             np.where(dirs[:, 1] > 0, LABEL_FLOOR, LABEL_CEILING)).astype(np.int16)
        else:
            tg = (GROUND_Y - origin[1]) * inv[:, 1]
            hit = (dirs[:, 1] > 0) & (tg > 0)
            px = origin[0] + tg * dirs[:, 0]
            pz = origin[2] + tg * dirs[:, 2]
            hit &= np.hypot(px, pz) < GROUND_RANGE
            t = np.where(hit, tg, np.inf)
            normal[hit] = (0.0, -1.0, 0.0)
            label[hit] = LABEL_FLOOR
        for b, (lo, hi) in enumerate(scene.boxes):
            t1 = (lo - origin) * inv
            t2 = (hi - origin) * inv
            tmin = np.fmin(t1, t2)
            tmax = np.fmax(t1, t2)
            axis = np.argmax(tmin, axis=1)
            near = tmin[np.arange(n), axis]
            far = np.min(tmax, axis=1)
            hit = (near <= far) & (near > 0) & (near < t)
            t = np.where(hit, near, t)
            rows = np.nonzero(hit)[0]
            normal[rows] = 0.0
            normal[rows, axis[rows]] = -np.sign(dirs[rows, axis[rows]])
            label[rows] = LABEL_BOX + b
    return t, normal, label


def _shade(scene: _Scene, points: np.ndarray, normal: np.ndarray, label: np.ndarray,
           dirs_world: np.ndarray) -> np.ndarray:
    """Return float RGB in [0, 1]: textured albedo times Lambert shading (sky is a gradient)."""
    sky = label == LABEL_SKY
    albedo = scene.colours[label]
    # Texture coordinates: the two world axes lying in the surface plane.
    axis = np.argmax(np.abs(normal), axis=1)
    coords = np.where(np.isfinite(points), points, 0.0)
    a = np.where(axis == 0, coords[:, 2], coords[:, 0])
    b = np.where(axis == 1, coords[:, 2], coords[:, 1])
    if scene.kind == 'outdoor':
        a, b = a / 3.0, b / 3.0
    tex = _texture(a, b, scene.salts[label])
    if scene.kind == 'room':
        to_light = np.array([0.0, -1.3, 2.0]) - coords
        to_light /= np.linalg.norm(to_light, axis=1, keepdims=True) + 1e-9
    else:
        sun = np.array([0.4, -0.8, -0.45])
        to_light = np.broadcast_to(sun / np.linalg.norm(sun), normal.shape)
    lambert = np.clip(np.sum(normal * to_light, axis=1), 0.0, 1.0)
    colour = albedo * (tex * (0.35 + 0.65 * lambert))[:, None]
    if sky.any():
        elevation = -dirs_world[sky, 1] / np.linalg.norm(dirs_world[sky], axis=1)
        w = np.clip(elevation * 2.0, 0.0, 1.0)[:, None]
        colour[sky] = (1 - w) * np.array([0.75, 0.85, 0.95]) + w * np.array([0.3, 0.5, 0.9])
    return np.clip(colour, 0.0, 1.0)


def _lidar_pixels(k: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels hit by the beams of a 16-line LiDAR at the camera origin (unique, in the image)."""
    elevation = np.deg2rad(np.linspace(*LIDAR_ELEVATION_DEG, LIDAR_LINES))
    half_fov = np.arctan2(width / 2.0, k[0, 0])
    step = np.deg2rad(LIDAR_AZIMUTH_STEP_DEG)
    azimuth = np.arange(-half_fov, half_fov, step)
    el, az = np.meshgrid(elevation, azimuth, indexing='ij')
    x = np.cos(el) * np.sin(az)
    y = np.sin(el)
    z = np.cos(el) * np.cos(az)
    u = np.rint(k[0, 0] * x / z + k[0, 2]).astype(np.int64).ravel()
    v = np.rint(k[1, 1] * y / z + k[1, 2]).astype(np.int64).ravel()
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat = np.unique(v[inside] * width + u[inside])
    return flat // width, flat % width


def _sparse(depth: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """
    Return the LiDAR depth image: NaN except at beam pixels.

    Returns are noisy (about 1 % of depth plus 1 cm), a few drop out, none beyond the maximum
    range or on sky. At depth edges a beam footprint covers two surfaces; with LIDAR_BLEED_PROB
    it reports the other surface's depth (the mixed-pixel outliers real LiDARs give).
    """
    height, width = depth.shape
    sparse = np.full(depth.shape, np.nan, dtype=np.float32)
    z = depth[rows, cols].astype(np.float64)
    offsets = np.arange(-LIDAR_FOOTPRINT_PX, LIDAR_FOOTPRINT_PX + 1)
    neighbour = depth[rows[:, None], np.clip(cols[:, None] + offsets, 0, width - 1)]
    neighbour = neighbour.astype(np.float64)
    with np.errstate(invalid='ignore'):
        gap = np.where(np.isfinite(neighbour), np.abs(neighbour - z[:, None]), 0.0)
    worst = np.argmax(gap, axis=1)
    edge = gap[np.arange(len(z)), worst] > LIDAR_EDGE_REL * z
    bleed = edge & (rng.random(len(z)) < LIDAR_BLEED_PROB)
    z = np.where(bleed, neighbour[np.arange(len(z)), worst], z)
    sigma = np.hypot(LIDAR_NOISE_REL * z, LIDAR_NOISE_ABS)
    with np.errstate(invalid='ignore'):
        z = z + rng.standard_normal(len(z)) * np.where(np.isfinite(sigma), sigma, 0.0)
        keep = np.isfinite(z) & (z > 0) & (z < LIDAR_MAX_RANGE)
    keep &= rng.random(len(z)) >= LIDAR_DROPOUT
    sparse[rows[keep], cols[keep]] = z[keep]
    return sparse


def render_sequence(num_frames: int = 20, *, width: int = 320, height: int = 240,
                    scene: str = 'room', seed: int = 0, fps: float = 10.0,
                    start_stamp: float = 1_700_000_000.0) -> list[SyntheticFrame]:
    """Render a deterministic sequence; the same arguments always give identical frames."""
    if scene not in ('room', 'outdoor'):
        raise ValueError(f"scene must be 'room' or 'outdoor', got {scene!r}")
    if num_frames < 1 or width < 2 or height < 2 or fps <= 0:
        raise ValueError('num_frames >= 1, width/height >= 2 and fps > 0 are required')
    world = _make_scene(scene, seed)
    k = intrinsics(width, height)
    v, u = np.mgrid[0:height, 0:width]
    dirs_cam = np.stack([(u.ravel() - k[0, 2]) / k[0, 0], (v.ravel() - k[1, 2]) / k[1, 1],
                         np.ones(u.size)], axis=1)
    lidar_rows, lidar_cols = _lidar_pixels(k, width, height)
    frames = []
    for index in range(num_frames):
        pose = camera_pose(index / max(num_frames - 1, 1), scene)
        rotation, origin = pose[:3, :3], pose[:3, 3]
        dirs_world = dirs_cam @ rotation.T
        t, normal_world, label = _cast(world, origin, dirs_world)
        with np.errstate(invalid='ignore'):
            points = origin + t[:, None] * dirs_world
        rgb = _shade(world, points, normal_world, label, dirs_world)
        normal_cam = normal_world @ rotation
        normal_cam[label == LABEL_SKY] = np.nan
        depth = t.reshape(height, width).astype(np.float32)
        rng = np.random.default_rng([seed, index])
        frames.append(SyntheticFrame(
            index=index,
            stamp=start_stamp + index / fps,
            rgb=np.rint(rgb * 255.0).astype(np.uint8).reshape(height, width, 3),
            depth=depth,
            sparse_depth=_sparse(depth, lidar_rows, lidar_cols, rng),
            k=k.copy(),
            width=width,
            height=height,
            pose=pose,
            normal=normal_cam.reshape(height, width, 3).astype(np.float32),
            labels=label.reshape(height, width),
        ))
    return frames


# -- the sequence as a rosbag2 bag ------------------------------------------------------------
FRAME_ID = 'camera_optical_frame'
# Per frame the side inputs are logged just before the image (1 us apart), so a player that
# follows log time delivers camera_info and LiDAR depth before the image they belong to.
LOG_OFFSETS_NS = {bag_io.TOPIC_CAMERA_INFO: 0, bag_io.TOPIC_SPARSE_DEPTH: 1_000,
                  bag_io.TOPIC_IMAGE: 2_000}


def frame_messages(frame: SyntheticFrame, typestore: Typestore,
                   frame_id: str = FRAME_ID) -> list[tuple[str, str, object]]:
    """
    Build the camera_info, LiDAR depth and image messages of one synthetic frame.

    All three carry the same header (the frame's stamp), as a driver with hardware sync would.
    LiDAR depth is 32FC1 in metres with NaN for no return, registered to the camera image.
    """
    types = typestore.types
    stamp_ns = seconds_to_ns(frame.stamp)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=stamp_ns // 1_000_000_000,
                                                   nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id)
    fields = {name: np.asarray(value, dtype=np.float64) if isinstance(value, list) else value
              for name, value in pinhole_fields(frame.k, frame.width, frame.height).items()}
    info = types['sensor_msgs/msg/CameraInfo'](
        header=header, roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False), **fields)
    image_cls = types['sensor_msgs/msg/Image']
    rgb = np.ascontiguousarray(frame.rgb, dtype=np.uint8)
    image = image_cls(header=header, height=frame.height, width=frame.width, encoding='rgb8',
                      is_bigendian=0, step=3 * frame.width, data=rgb.reshape(-1))
    sparse = np.ascontiguousarray(frame.sparse_depth, dtype='<f4')
    depth = image_cls(header=header, height=frame.height, width=frame.width, encoding='32FC1',
                      is_bigendian=0, step=4 * frame.width,
                      data=sparse.view(np.uint8).reshape(-1))
    return [
        (bag_io.TOPIC_CAMERA_INFO, 'sensor_msgs/msg/CameraInfo', info),
        (bag_io.TOPIC_SPARSE_DEPTH, 'sensor_msgs/msg/Image', depth),
        (bag_io.TOPIC_IMAGE, 'sensor_msgs/msg/Image', image),
    ]


def write_sequence_bag(frames: Iterable[SyntheticFrame], path: str | Path, *,
                       storage: str = 'mcap', frame_id: str = FRAME_ID) -> Path:
    """Write a synthetic sequence as a rosbag2 (raises if path exists; bags are never merged)."""
    with bag_io.BagWriter(path, storage=storage) as bag:
        for frame in frames:
            stamp_ns = seconds_to_ns(frame.stamp)
            for topic, msgtype, message in frame_messages(frame, bag.typestore, frame_id):
                bag.add_topic(topic, msgtype)
                bag.write(topic, stamp_ns + LOG_OFFSETS_NS[topic],
                          bag.serialize(message, msgtype))
    return Path(path)
