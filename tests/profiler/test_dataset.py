"""TrainingData: shapes are checked, subsets keep rows aligned."""

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.dataset import TrainingData


def test_subset_keeps_rows_aligned_and_shapes_are_checked():
    space = make_space("mobilenet_v1", {"resolution": 32})
    widths = np.array([space.smallest(), space.largest(), space.base_widths()])
    data = TrainingData(space, widths, np.array([1.0, 3.0, 2.0]), np.array([10, 11, 12]))
    part = data.subset(np.array([False, True, True]))
    assert len(part) == 2 and part.sample_ids.tolist() == [11, 12]
    assert part.widths.tolist() == [list(space.largest()), list(space.base_widths())]
    with pytest.raises(ValueError, match="widths has shape"):
        TrainingData(space, widths[:, :3], np.array([1.0, 3.0, 2.0]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="sample_ids"):
        TrainingData(space, widths, np.array([1.0, 3.0, 2.0]), np.array([1, 2]))
