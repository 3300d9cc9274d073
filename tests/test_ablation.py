import pytest
import torch

from advinterp.ablation import ReferenceGridAblation, grid_boxes
from advinterp.exceptions import ParameterError


def test_grid_boxes_cover_and_overlap():
    b = grid_boxes(10, 7, 3, 3)
    assert b[:, 0].unique().tolist() == [0, 3, 6, 7] and b[:, 1].unique().tolist() == [0, 3, 4]
    cover = torch.zeros(10, 7, dtype=torch.bool)
    for y0, x0, y1, x1 in b.tolist():
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert len(grid_boxes(10, 7, 3, 3, cover=False)) == 3 * 2
    assert len(grid_boxes(8, 8, (4, 2), (2, 1))) == 3 * 7


@pytest.mark.parametrize("args,match", [((4, 4, 5, 1), "no larger than"), ((4, 4, 2, 0), "stride"),
                                        ((4, 4, 0, 1), "size")])
def test_grid_boxes_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        grid_boxes(*args)


def test_reference_ablation_puts_clean_pixels_back():
    g = torch.Generator().manual_seed(0)
    x0, xa = torch.rand(2, 3, 5, 5, generator=g), torch.rand(2, 3, 5, 5, generator=g)
    boxes = grid_boxes(5, 5, 3, 2)
    out = ReferenceGridAblation().ablate(xa, x0, boxes, 1, 3)
    assert out.shape == (2, 3, 3, 5, 5)
    for j in range(3):
        y0, x0_, y1, x1 = boxes[1 + j].tolist()
        mask = torch.zeros(5, 5, dtype=torch.bool)
        mask[y0:y1, x0_:x1] = True
        assert torch.equal(out[:, j][:, :, mask], x0[:, :, mask])
        assert torch.equal(out[:, j][:, :, ~mask], xa[:, :, ~mask])
    all_boxes = ReferenceGridAblation().ablate(xa, x0, boxes, 0, len(boxes))
    assert all_boxes.shape[1] == len(boxes)
    with pytest.raises(ParameterError):
        ReferenceGridAblation().ablate(xa, x0, boxes, 2, len(boxes))
