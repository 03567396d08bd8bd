"""The shared image networks' pooling: where in the film a feature lies."""

import pytest
import torch

from privdiff_core.nets import ImageClassifier, SmallConvNet, build_backbone


def _spot(row: int, col: int, size: int = 8) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row, col] = 1.0
    return image


def test_a_pooling_grid_tells_where_a_feature_lies_and_global_pooling_does_not():
    """No conv blocks (widths ()): the embedding reads the pixels' pooling alone. Global average
    pooling gives a spot at the top left and the same spot at the bottom right one embedding; a
    2 x 2 grid tells them apart."""
    torch.manual_seed(0)
    top_left, bottom_right = _spot(1, 1), _spot(6, 6)
    pooled_over_film = SmallConvNet(embed_dim=4, widths=(), pool_grid=1)
    torch.testing.assert_close(pooled_over_film(top_left), pooled_over_film(bottom_right))
    grid = SmallConvNet(embed_dim=4, widths=(), pool_grid=2)
    assert grid.embed.in_features == 4
    assert not torch.allclose(grid(top_left), grid(bottom_right))


def test_grid_pooling_takes_any_film_size_and_global_pooling_keeps_its_weights():
    """The grid adapts to the last feature map (64 and 96 px films alike); pool_grid 1 has the
    parameters models saved before the option had, so they load as they were."""
    net = ImageClassifier(14, "small", 16, (8, 16, 16), pool_grid=4)
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 14)
    assert net(torch.zeros(2, 1, 96, 96)).shape == (2, 14)
    # pool grid 1 (the default): the embedding reads the last width (16) alone, as before the option
    grid_1 = {name: p.shape for name, p in ImageClassifier(14, "small", 16, (8, 16), 1).state_dict().items()}
    default = {name: p.shape for name, p in ImageClassifier(14, "small", 16, (8, 16)).state_dict().items()}
    assert grid_1 == default
    assert grid_1["backbone.embed.weight"] == (16, 16)


def test_pool_grid_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="pool_grid must be >= 1"):
        SmallConvNet(8, (8,), pool_grid=0)
    with pytest.raises(ValueError, match="small backbone only"):
        build_backbone("resnet50", 8, pool_grid=4)
