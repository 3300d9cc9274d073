"""Scene plots of the synthetic world."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from advinterp.datasets.synthetic import CLASSES, CONCEPTS, PIXEL_CATEGORIES, SyntheticWorld  # noqa: E402
from advinterp.exceptions import ParameterError  # noqa: E402
from advinterp.viz import concept_colors, plot_scenes, save_figure  # noqa: E402


@pytest.fixture(scope="module")
def batch():
    return SyntheticWorld(size=32, seed=0).generate(5, split="test")


def test_plot_scenes_layout(batch):
    fig = plot_scenes(batch, n=4)
    assert isinstance(fig, Figure)
    rows = 1 + len(PIXEL_CATEGORIES)
    assert len(fig.axes) == rows * 4
    titles = [ax.get_title() for ax in fig.axes[:4]]
    for j, title in enumerate(titles):
        assert CLASSES[int(batch.labels[j])] in title
    # boxes are drawn on the image row: one rectangle per box
    for j in range(4):
        assert len(fig.axes[j].patches) == len(batch.boxes[j])
    # one legend per row, on the last column
    assert sum(ax.get_legend() is not None for ax in fig.axes) == rows


def test_plot_scenes_n_clipped_and_checked(batch):
    fig = plot_scenes(batch, n=50)
    assert len(fig.axes) == (1 + len(PIXEL_CATEGORIES)) * len(batch)
    with pytest.raises(ParameterError):
        plot_scenes(batch, n=0)
    with pytest.raises(ParameterError):
        plot_scenes(SyntheticWorld(size=32).generate(0))


def test_concept_colors_are_fixed_and_distinct():
    colors = concept_colors(CONCEPTS)
    assert set(colors) == {0} | {c.id for c in CONCEPTS}
    objects = [colors[c.id] for c in CONCEPTS if c.category == "object"]
    assert len(set(objects)) == len(objects)
    red = SyntheticWorld.concept_id("color", "red")
    r, g, b = colors[red]
    assert r > 0.6 and g < 0.4 and b < 0.4


def test_save_figure(batch, tmp_path):
    out = save_figure(plot_scenes(batch, n=2), tmp_path / "nested" / "dir" / "scenes.png")
    assert out == tmp_path / "nested" / "dir" / "scenes.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
