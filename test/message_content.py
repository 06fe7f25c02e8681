"""What a subscriber decodes from an output message, for comparing outputs field by field."""

import numpy as np


def message_content(msg) -> dict:
    """Every field of a sensor/lotus message, data as raw bytes (CDR padding is not compared)."""
    out = {}
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if name == 'header':
            value = (value.stamp.sec, value.stamp.nanosec, value.frame_id)
        elif name == 'fields':
            value = [(f.name, f.offset, f.datatype, f.count) for f in value]
        elif name == 'roi':
            value = (value.x_offset, value.y_offset, value.height, value.width)
        elif isinstance(value, np.ndarray) or hasattr(value, 'tobytes'):
            value = value.tobytes()
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
        out[name] = value
    return out
