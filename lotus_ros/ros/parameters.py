"""
Every node parameter in one table: name, default, description, range/choices, runtime changes.

The table is plain Python so the offline bag tool and the tests read the same defaults and
validation rules as the node; only `declare_parameters` and `load_parameter_files` use rclpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import math
from pathlib import Path
import re
import tempfile
from typing import Any

import yaml

COLORMAPS = ('turbo', 'viridis', 'inferno', 'magma', 'plasma', 'jet', 'gray')


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    runtime: bool = False                       # may change while running
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None


def _p(name, default, description, **kw) -> ParamSpec:
    return ParamSpec(name, default, description, **kw)


SPECS: tuple[ParamSpec, ...] = (
    # model
    _p('depth_model', 'jingheya/lotus-depth-d-v2-0-disparity',
       'Lotus depth checkpoint: Hugging Face id or local folder (diffusers layout); empty '
       'disables depth'),
    _p('normal_model', 'jingheya/lotus-normal-d-v1-1',
       'Lotus normal checkpoint: Hugging Face id or local folder; empty disables normals'),
    _p('device', 'auto', "Torch device: 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'"),
    _p('dtype', 'auto', 'Inference dtype (auto = float16 on CUDA, float32 on CPU)',
       choices=('auto', 'float32', 'float16', 'bfloat16')),
    _p('processing_resolution', 768,
       'Longest image side fed to the model in pixels (outputs are resized back); 0 = native '
       'size; else at least 8', min=0),
    _p('resize_mode', 'registered',
       "Model input size: 'registered' rounds both sides to multiples of 8 so output pixel "
       "(u, v) is input pixel (u, v); 'released' truncates like the authors' code (outputs "
       'drift up to ~10 px at the far edges)', choices=('registered', 'released')),
    _p('compile', False, 'torch.compile the UNet (slow start, faster steady state)'),
    _p('local_files_only', False, 'Never download; only use cached or local checkpoints'),
    _p('depth_space', '', "Override the depth model's output space; empty = from the checkpoint",
       choices=('', 'disparity', 'depth')),
    _p('backend', 'auto',
       "Model family: 'auto' (from the checkpoint's model_index.json and UNet), 'lotus-d', "
       "'lotus-g' or 'marigold'; depth_model and normal_model must be of that family",
       choices=('auto', 'lotus-d', 'lotus-g', 'marigold')),
    _p('seed', 0, 'First noise seed of Lotus-G and Marigold (draw k uses seed + k, re-seeded '
       'every frame, so the same image gives the same output)', min=0, max=1_000_000_000),
    _p('ensemble_size', 1,
       'Draws averaged per frame by Lotus-G and Marigold; above 1 their per-pixel standard '
       'deviation is published on depth/uncertainty (Lotus-D: 1 only)', min=1, max=64),
    _p('num_inference_steps', 0, "Marigold's denoising steps; 0 = the checkpoint's default",
       min=0, max=1000),
    _p('engine_factory', '',
       "Advanced/tests: 'module:callable' building the engine from the parameter dict instead "
       'of LotusEngine.from_pretrained'),
    # inputs and scheduling
    _p('cameras', [''],
       "Camera names, one engine for all: camera c reads c/image, c/camera_info, c/sparse_* and "
       "publishes every output under c/; [''] = one camera, topics without a prefix"),
    _p('batch.max_size', 4, 'Most frames (one per camera) in one model call; same-size frames '
       'of several cameras share it', min=1, max=64),
    _p('batch.max_wait_ms', 5.0,
       'Milliseconds a frame may wait for frames of other cameras expected that soon, to share '
       'a model call with them (0 = never wait)', min=0.0, max=1000.0),
    _p('image_transport', 'raw', "'raw' subscribes to image, 'compressed' to image/compressed",
       choices=('raw', 'compressed')),
    _p('drop_frames', True,
       'true: newest frame wins, latency bounded by ~one inference (live). false: process every '
       'frame in order through a bounded queue (bags/offline)'),
    _p('queue_size', 30, 'Bounded queue length used when drop_frames is false', min=1, max=10000),
    _p('lazy', True, 'Skip outputs nobody subscribes to; with no subscribers run no inference',
       runtime=True),
    _p('camera_info_tolerance', 0.05,
       'Seconds: if no camera_info has the exact image stamp, use the latest one this close',
       runtime=True, min=0.0, max=10.0),
    _p('camera_info_wait', 0.2,
       'Seconds a frame may wait for its camera_info when it is late (drivers publish the image '
       'before its camera_info); never waited for when camera_info is not being published',
       runtime=True, min=0.0, max=5.0),
    # outputs
    _p('publish.depth', True, 'Publish depth/image (metres) and depth/camera_info while metric',
       runtime=True),
    _p('publish.relative', True, 'Publish depth/relative (unitless model output)', runtime=True),
    _p('publish.relative_raw', True,
       'Publish depth/relative_raw (the unstabilised model output) while temporal.stabilize is '
       'on', runtime=True),
    _p('publish.uncertainty', True,
       'Publish depth/uncertainty (32FC1 per-pixel std) when the backend has one (Lotus-G, '
       'Marigold with ensemble_size > 1)', runtime=True),
    _p('publish.depth_colored', True, 'Publish depth/colored (rgb8)', runtime=True),
    _p('publish.normal', True, 'Publish normal/image (32FC3 unit normals, optical frame)',
       runtime=True),
    _p('publish.normal_colored', True, 'Publish normal/colored (rgb8)', runtime=True),
    _p('publish.points', True, 'Publish points (PointCloud2) while metric', runtime=True),
    _p('publish.alignment', True, 'Publish alignment (DepthAlignment) every processed frame',
       runtime=True),
    # point cloud
    _p('points.stride', 1, 'Keep every n-th pixel in both directions', runtime=True,
       min=1, max=64),
    _p('points.organized', True, 'Organised cloud (height x width, NaN for invalid) or a flat '
       'list of valid points', runtime=True),
    _p('points.min_depth', 0.0, 'Metres; closer points are dropped / NaN', runtime=True,
       min=0.0, max=1e6),
    _p('points.max_depth', 100.0, 'Metres; farther points are dropped / NaN', runtime=True,
       min=0.0, max=1e6),
    _p('points.color', True, 'Add packed rgb from the input image', runtime=True),
    _p('points.normals', False, 'Add normal_x/y/z when the normal model runs', runtime=True),
    _p('points.layout', 'pcl',
       "Point record: 'pcl' (x y z, rgb, normal_x/y/z float32: what PCL and RViz read) or "
       "'compact' (the same, but normals as three int8 n*127 and a pad byte: 20 bytes with "
       'colour and normals instead of 28); consumers read the field offsets', runtime=True,
       choices=('pcl', 'compact')),
    # alignment
    _p('alignment.source', 'sparse_depth',
       "Metric reference: 'none', 'sparse_depth' (Image 16UC1 mm / 32FC1 m) or 'sparse_points' "
       '(PointCloud2)', choices=('none', 'sparse_depth', 'sparse_points')),
    _p('alignment.mode', 'scale_shift',
       'Fit metric = scale*pred+shift, scale only, or none (only fixed_scale gives metric)',
       runtime=True, choices=('scale_shift', 'scale', 'none')),
    _p('alignment.z_min', 0.1, 'Metres; metric depth below this is -Inf (REP 117 too close)',
       runtime=True, min=1e-4, max=1e5),
    _p('alignment.z_max', 100.0, 'Metres; metric depth beyond this is +Inf', runtime=True,
       min=1e-3, max=1e6),
    _p('alignment.max_time_difference', 0.1,
       'Seconds: sparse depth is used for an image only if its stamp is this close',
       runtime=True, min=0.0, max=10.0),
    _p('alignment.max_age', 2.0,
       'Seconds since the last accepted fit after which metric outputs stop (stale)',
       runtime=True, min=0.0, max=3600.0),
    _p('alignment.min_inliers', 8, 'Fewest inlier correspondences for an accepted fit',
       runtime=True, min=2, max=1_000_000),
    _p('alignment.process_noise', 0.1,
       'Relative scale change per frame the alignment filter expects; Lotus normalises every '
       'frame on its own, so keep it well above 0.01', runtime=True, min=0.0, max=10.0),
    _p('alignment.measurement_floor', 0.03,
       'Relative noise floor of one frame fit (larger = smoother, slower metric scale)',
       runtime=True, min=0.0, max=10.0),
    _p('alignment.fixed_scale', 0.0,
       'Positive: metric = fixed_scale*pred+fixed_shift always (no sparse input needed); '
       '0 = off', runtime=True, min=0.0, max=1e6),
    _p('alignment.fixed_shift', 0.0, 'Shift used with fixed_scale', runtime=True,
       min=-1e6, max=1e6),
    _p('alignment.points_transform', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
       'Static transform camera_optical <- sparse_points frame as [x y z qx qy qz qw], used '
       'when the cloud frame differs from the image frame and tf2 is off or not installed'),
    _p('alignment.use_tf', True,
       'Move sparse_points into the image frame with tf2 when tf2_ros is installed (a failed '
       'lookup skips that cloud); otherwise alignment.points_transform is used'),
    # temporal consistency (lotus_ros.core.temporal)
    _p('temporal.stabilize', False,
       'Stabilise depth/relative across frames (the raw output moves to depth/relative_raw) '
       'and carry the metric scale through sparse-depth dropouts; false: every frame on its own',
       runtime=True),
    _p('temporal.time_constant', 1.5,
       "Seconds over which the stabilised range follows the model's own per-frame range",
       runtime=True, min=1e-3, max=1e6),
    _p('temporal.jump', 0.05,
       'Range change (relative units) beyond which the stabilised range follows only slowly '
       '(a near object entering the view is held, not followed)', runtime=True,
       min=1e-4, max=1.0),
    _p('temporal.reset_after', 3,
       'Refused inter-frame fits in a row after which the stabiliser restarts from the '
       "frame's own range (a scene cut)", runtime=True, min=1, max=1000),
    _p('temporal.carry', 'uncertainty',
       "Metric scale between sparse fits while stabilising: 'uncertainty' carries it through "
       'the inter-frame maps until carrying added temporal.carry_max_uncertainty; '
       "'max_age' keeps the last fit until alignment.max_age (no carrying)", runtime=True,
       choices=('uncertainty', 'max_age')),
    _p('temporal.carry_max_uncertainty', 0.06,
       'Relative depth uncertainty (at mid-range) carrying may add before metric output stops',
       runtime=True, min=0.0, max=10.0),
    _p('temporal.carry_noise_density', 0.04,
       'Relative drift of a carried scale per sqrt(second) (camera motion and model flicker)',
       runtime=True, min=0.0, max=10.0),
    # visualisation
    _p('visualization.colormap', 'turbo', 'Colormap for depth/colored', runtime=True,
       choices=COLORMAPS),
    _p('visualization.depth_min', 0.0,
       'Lower end of the depth/colored range (0 with depth_max 0 = 2-98 percentile auto range)',
       runtime=True, min=0.0, max=1e6),
    _p('visualization.depth_max', 0.0, 'Upper end of the depth/colored range (0 = auto)',
       runtime=True, min=0.0, max=1e6),
    _p('diagnostics_period', 1.0, 'Seconds between /diagnostics messages', min=0.1, max=60.0),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in SPECS}

# Parameters a camera may set for itself (cameras_params.<camera>.<name>): how its inputs are
# read, aligned and published. The model, the device and the scheduling are shared.
_PER_CAMERA_NAMES = ('image_transport', 'lazy', 'camera_info_tolerance', 'camera_info_wait')
_PER_CAMERA_GROUPS = ('publish.', 'points.', 'alignment.', 'temporal.', 'visualization.')
PER_CAMERA: tuple[str, ...] = tuple(
    s.name for s in SPECS if s.name in _PER_CAMERA_NAMES or s.name.startswith(_PER_CAMERA_GROUPS))
CAMERA_PARAMS_PREFIX = 'cameras_params.'
_CAMERA_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')


def camera_parameter(camera: str, name: str) -> str:
    """Name camera's own value of `name` ('/' in the camera name becomes '.')."""
    return f"{CAMERA_PARAMS_PREFIX}{camera.replace('/', '.')}.{name}"


def split_camera_parameter(param: str, cameras: Iterable[str]) -> tuple[str, str] | None:
    """(camera, name) of a cameras_params.<camera>.<name> parameter; None for other names."""
    for camera in cameras:
        prefix = camera_parameter(camera, '')
        if camera and param.startswith(prefix) and param[len(prefix):] in PER_CAMERA:
            return camera, param[len(prefix):]
    return None


def _cameras_reason(cameras: list[str]) -> str | None:
    if not cameras:
        return "cameras must name at least one camera ([''] = one camera without a prefix)"
    if cameras == ['']:
        return None
    for name in cameras:
        if not _CAMERA_NAME.fullmatch(name):
            return (f"{name!r} is not a camera name (a relative topic name: tokens "
                    "[A-Za-z][A-Za-z0-9_]* joined by '/', e.g. front, stereo/left; '' only as "
                    'the single camera)')
    twice = sorted({c for c in cameras if cameras.count(c) > 1})
    if twice:
        return f"cameras names a camera twice: {', '.join(twice)}"
    return None


def defaults() -> dict[str, Any]:
    return {s.name: (list(s.default) if isinstance(s.default, list) else s.default)
            for s in SPECS}


def _type_ok(spec: ParamSpec, value: Any) -> bool:
    d = spec.default
    if isinstance(d, bool):
        return isinstance(value, bool)
    if isinstance(d, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(d, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(d, str):
        return isinstance(value, str)
    if isinstance(d, list) and isinstance(d[0], str):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if isinstance(d, list):
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return False


def validate(name: str, value: Any, *, running: bool = False) -> str | None:
    """Return None when `value` is acceptable for `name`, else the reason it is rejected."""
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. qos_overrides.*, use_sim_time)
    if running and not spec.runtime:
        return f'{name} cannot change while running; restart the node'
    if not _type_ok(spec, value):
        if isinstance(spec.default, list):
            kind = 'strings' if isinstance(spec.default[0], str) else 'numbers'
            return f'{name} expects a list of {kind}, got {value!r}'
        return f'{name} expects {type(spec.default).__name__}, got {type(value).__name__}'
    if spec.choices is not None and value not in spec.choices:
        return f"{name} must be one of {', '.join(repr(c) for c in spec.choices)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f'{name} must be finite'
        if spec.min is not None and value < spec.min:
            return f'{name} must be >= {spec.min}'
        if spec.max is not None and value > spec.max:
            return f'{name} must be <= {spec.max}'
    if name == 'processing_resolution' and 0 < value < 8:
        return f'{name} must be 0 (native size) or at least 8 (one latent cell)'
    if name == 'cameras':
        return _cameras_reason(list(value))
    if name == 'alignment.points_transform':
        if len(value) != 7:
            return f'{name} needs 7 numbers [x y z qx qy qz qw]'
        if abs(math.sqrt(sum(v * v for v in value[3:])) - 1.0) > 1e-3:
            return f'{name} quaternion must have unit length'
    return None


def validate_set(params: dict[str, Any]) -> str | None:
    """Cross-parameter rules, checked on the would-be full parameter set."""
    if params['alignment.z_min'] >= params['alignment.z_max']:
        return 'alignment.z_min must be smaller than alignment.z_max'
    if params['points.min_depth'] > params['points.max_depth']:
        return 'points.min_depth must not exceed points.max_depth'
    lo, hi = params['visualization.depth_min'], params['visualization.depth_max']
    if (lo or hi) and lo >= hi:
        return 'visualization.depth_min must be smaller than visualization.depth_max'
    if not params['depth_model'] and not params['normal_model'] \
            and not params['engine_factory']:
        return 'depth_model and normal_model are both empty: nothing to run'
    return None


def _descriptor(spec: ParamSpec, name: str):
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    desc = ParameterDescriptor(name=name, description=spec.description,
                               read_only=not spec.runtime)
    d = spec.default
    if isinstance(d, bool):
        desc.type = ParameterType.PARAMETER_BOOL
    elif isinstance(d, int):
        desc.type = ParameterType.PARAMETER_INTEGER
        if spec.min is not None and spec.max is not None:
            desc.integer_range = [IntegerRange(from_value=int(spec.min),
                                               to_value=int(spec.max), step=0)]
    elif isinstance(d, float):
        # users write `-p x:=1` for a double: accept integers too (validate() checks)
        desc.dynamic_typing = True
        if spec.min is not None:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    elif isinstance(d, str):
        desc.type = ParameterType.PARAMETER_STRING
        if spec.choices:
            desc.additional_constraints = 'one of: ' + ', '.join(
                repr(c) for c in spec.choices)
    elif isinstance(d, list):
        desc.type = ParameterType.PARAMETER_STRING_ARRAY if isinstance(d[0], str) else \
            ParameterType.PARAMETER_DOUBLE_ARRAY
    return desc


def python_value(spec: ParamSpec, value: Any) -> Any:
    """Type a value as the table does: an integer given for a double is a float, arrays lists."""
    if isinstance(spec.default, float) and isinstance(value, int) and \
            not isinstance(value, bool):
        return float(value)
    if isinstance(spec.default, list) and value is not None:
        return list(value)
    return value


def declare_parameters(node) -> dict[str, Any]:
    """
    Declare every parameter on an rclpy node with descriptors; return the current values.

    Parameters already declared (a lifecycle node configured again after cleanup) keep their
    declaration and their current value.
    """
    values = {}
    for spec in SPECS:
        if node.has_parameter(spec.name):
            value = node.get_parameter(spec.name).value
        else:
            value = node.declare_parameter(spec.name, spec.default,
                                           _descriptor(spec, spec.name)).value
        values[spec.name] = python_value(spec, value)
    return values


def declare_camera_parameters(node, cameras: list[str]) -> dict[str, dict[str, Any]]:
    """
    Declare cameras_params.<camera>.<name> for every camera and per-camera name, without a value.

    Return each camera's own values (those given at startup). A parameter without a value
    follows the global one (its runtime changes too); one given a value keeps it. Declared with
    dynamic typing (rcl types a parameter by its first value): validate() refuses a wrong type,
    at startup and in the node's set callback.
    """
    own: dict[str, dict[str, Any]] = {c: {} for c in cameras}
    if cameras == ['']:
        return own
    for camera in cameras:
        for name in PER_CAMERA:
            spec, param = SPEC_BY_NAME[name], camera_parameter(camera, name)
            desc = _descriptor(spec, param)
            desc.dynamic_typing = True   # no value until given one
            if node.has_parameter(param):
                value = node.get_parameter(param).value
            else:
                value = node.declare_parameter(param, None, desc).value
            if value is not None:
                own[camera][name] = python_value(spec, value)
    return own


def _node_sections(tree: Any, path: str, keys: tuple[str, ...] = ()):
    """Yield (node name, ros__parameters) of a parameter file, nested namespace keys joined."""
    if not isinstance(tree, dict):
        raise ValueError(f'{path}: {"/".join(keys) or "the file"} is not a mapping; ros2 '
                         'parameter files look like {node: {ros__parameters: {...}}}')
    for key, value in tree.items():
        if key == 'ros__parameters':
            yield '/' + '/'.join(k.strip('/') for k in keys), value
        else:
            yield from _node_sections(value, path, (*keys, str(key)))


def _name_pattern(node_key: str) -> re.Pattern:
    """Match node names as rcl does: '*' is one name token, '**' any number of them (or none)."""
    tokens = node_key.strip('/').split('/')
    return re.compile(''.join(r'(/\w+)*' if t == '**' else r'/\w+' if t == '*'
                              else '/' + re.escape(t) for t in tokens))


def _rclpy_values(section: dict[str, Any]) -> dict[str, Any]:
    """Values of one node section as rclpy's YAML parser types and names them (a.b for nesting)."""
    from rclpy.parameter import parameter_dict_from_yaml_file, parameter_value_to_python

    with tempfile.NamedTemporaryFile('w', suffix='.yaml') as f:
        yaml.safe_dump({'/**': {'ros__parameters': section}}, f, sort_keys=False)
        f.flush()
        parsed = parameter_dict_from_yaml_file(f.name, use_wildcard=True)
    return {name: parameter_value_to_python(msg.value) for name, msg in parsed.items()}


def load_parameter_files(paths: Iterable[str | Path], node_name: str = 'lotus',
                         namespace: str = '/lotus') -> dict[str, Any]:
    """
    Return the parameters `--ros-args --params-file` files give the node namespace/node_name.

    Defaults to the launch file's node, /lotus/lotus. Node keys match as rcl matches them: the
    full name ('/lotus/lotus', or nested '/lotus: {lotus: ...}'), a bare name is a node in the
    root namespace ('lotus' is '/lotus'), and wildcards: '*' one token, '**' any number ('/**',
    '/**/lotus'). Every matching key applies, in the order the keys first appear across the
    files (a key repeated in a later file keeps its place and takes the later values), so a
    '/**' after '/lotus/lotus' wins. rclpy's parser (parameter_dict_from_yaml_file) reads the
    values: it matches only '/**' and exact names itself, so keys are matched here and each
    matching section goes through it. Like rclpy, it re-guesses types from text: a quoted
    'true' is a bool here, a string for rcl.
    """
    fqn = namespace.rstrip('/') + '/' + node_name.strip('/')
    if not fqn.startswith('/'):
        fqn = '/' + fqn
    sections: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            tree = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f'{path} is not YAML: {exc}') from exc
        for key, section in _node_sections(tree or {}, str(path)):
            if not isinstance(section, dict):
                raise ValueError(f'{path}: ros__parameters of {key} is not a mapping')
            sections.setdefault(key, {}).update(_rclpy_values(section) if section else {})
    params: dict[str, Any] = {}
    for key, values in sections.items():
        if _name_pattern(key).fullmatch(fqn):
            params.update(values)
    return params
