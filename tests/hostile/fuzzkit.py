"""What the dialect fuzz tests share: hypothesis settings, JSON strategies, frame encoding and
key paths into nested frames (tests/hostile/test_fuzz_dialect.py and test_fuzz_gemini.py)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=20,
)


def enc(value) -> bytes:
    """JSON bytes of any value (stdlib json: integers beyond 64 bits included)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def set_path(obj, path: list, value) -> None:
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value


def paths(obj, prefix=()):
    """Every key or index path inside a nested frame (list items included)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield [*prefix, k]
        yield from paths(v, (*prefix, k))


def one_field_replaced(data, valid: list) -> bytes:
    """A valid frame with one (possibly nested) field replaced by any JSON value."""
    msg = json.loads(enc(data.draw(st.sampled_from(valid))))
    set_path(msg, data.draw(st.sampled_from(list(paths(msg)))), data.draw(json_values))
    return enc(msg)


def one_field_removed(data, valid: list) -> bytes:
    """A valid frame with one (possibly nested) field or list item removed."""
    msg = json.loads(enc(data.draw(st.sampled_from(valid))))
    path = data.draw(st.sampled_from(list(paths(msg))))
    cur = msg
    for k in path[:-1]:
        cur = cur[k]
    del cur[path[-1]]
    return enc(msg)
