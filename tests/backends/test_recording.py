"""``Recorder``: counts and spike lists from a kernel's per-step lists (``add_listed``) equal those
from the dense output (``add``), piece by piece and with the record window cutting the pieces."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends.numba.neurons import list_nonzero
from spike.backends.recording import Recorder


def _listed(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a listing kernel writes for ``dense [rows, B, n]`` (garbage past each count)."""
    rows, B, n = dense.shape
    index = np.full((rows, B, n), -7, np.int32)
    count = np.zeros((rows, B), np.int64)
    for r, b in np.ndindex(rows, B):
        count[r, b] = list_nonzero(dense[r, b], index[r, b])
    return index, count


@pytest.mark.parametrize("start, steps", [(0, 40), (3, 30), (11, 29)])
def test_listed_pieces_record_as_the_dense_output(start: int, steps: int) -> None:
    rng = np.random.default_rng(start)
    T, B, shape = 40, 3, (4, 5)
    dense = (rng.random((T, B, 20)) < 0.15).astype(np.float32)
    dense[7, 1] = -0.0  # not a spike (no bit test can mistake it)
    modes = frozenset({"counts", "spikes"})
    by_rows, by_lists = Recorder("p", modes, shape, B, start, steps), Recorder("p", modes, shape, B, start, steps)
    history = 2  # the buffer rows before each piece (a chunked run's history), never recorded
    for t0, t1 in [(0, 9), (9, 10), (10, 26), (26, 40)]:
        buffer = np.concatenate([np.ones((history, B, 20), np.float32), dense[t0:t1]])
        by_rows.add(buffer[history:], t0)
        index, count = _listed(buffer)
        by_lists.add_listed(index, count, history, history + t1 - t0, t0)
    np.testing.assert_array_equal(by_lists.counts(), by_rows.counts())
    np.testing.assert_array_equal(by_lists.counts(), (dense[start:start + steps] != 0).sum(0).reshape(B, *shape))
    a, b = by_lists.spikes(), by_rows.spikes()
    for field in ("times", "samples", "neurons"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert getattr(a, field).dtype == np.int32
    assert len(a) == int((dense[start:start + steps] != 0).sum()) > 0
