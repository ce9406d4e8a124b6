"""Feature crossing inside the towers (models/retrieval/crossing.py): each module against its
formula written out by hand, the towers' fields, causality, and 'off' = today's model."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from models.retrieval.crossing import CrossNetV2, DHENLayer, FieldAttention, FieldCrossing, MaskBlock, MaskNet
from models.retrieval.two_tower import load_model, two_tower
from models.retrieval.two_tower_settings import TwoTowerSettings

TINY = TwoTowerSettings(dim=8, max_len=6, layers=1, heads=2, dropout=0.0, history_dropout=0.0)
ATTRIBUTES = torch.tensor([[0, 0], [1, 2], [2, 0], [3, 1], [1, 3], [2, 2], [3, 0], [1, 1], [2, 3], [3, 3], [1, 0]])


def test_a_mask_block_masks_the_normalised_fields_with_a_mask_computed_from_the_instance():
    torch.manual_seed(0)
    block = MaskBlock(n_fields=3, dim=4).eval()
    fields = torch.randn(5, 3, 4)
    e = fields.flatten(1)
    lin1, lin2 = block.mask[0], block.mask[2]
    mask = F.relu(e @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    normed = F.layer_norm(e, (12,), block.norm_fields.weight, block.norm_fields.bias)
    hidden_norm = block.hidden[1]
    expected = F.relu(
        F.layer_norm((mask * normed) @ block.hidden[0].weight.T, (4,), hidden_norm.weight, hidden_norm.bias)
    )
    assert torch.allclose(block(fields), expected, atol=1e-5)
    # instance-guided: scaling one example's fields changes its mask, not only its scale
    scaled = fields.clone()
    scaled[0] *= 3.0
    assert not torch.allclose(block(scaled)[0], block(fields)[0], atol=1e-3)
    assert torch.allclose(block(scaled)[1:], block(fields)[1:], atol=1e-6)


def test_masknet_runs_its_blocks_in_parallel_and_projects_back_to_fields():
    torch.manual_seed(1)
    net = MaskNet(n_fields=2, dim=4, blocks=3).eval()
    fields = torch.randn(6, 2, 4)
    hidden = torch.cat([block(fields) for block in net.blocks], -1)
    assert torch.allclose(net(fields), (hidden @ net.out.weight.T + net.out.bias).view(6, 2, 4), atol=1e-6)


def test_dcn_v2_cross_layers_add_explicit_interactions_of_growing_order():
    torch.manual_seed(2)
    cross = CrossNetV2(n_fields=2, dim=3, layers=2).eval()
    fields = torch.randn(4, 2, 3)
    x0 = fields.flatten(1)
    x1 = x0 * (x0 @ cross.layers[0].weight.T + cross.layers[0].bias) + x0
    x2 = x0 * (x1 @ cross.layers[1].weight.T + cross.layers[1].bias) + x1
    assert torch.allclose(cross(fields), (x2 - x0).view(4, 2, 3), atol=1e-5)


def test_field_attention_lets_every_field_see_the_others_and_knows_which_field_is_which():
    torch.manual_seed(3)
    attention = FieldAttention(n_fields=3, dim=8).eval()
    fields = torch.randn(2, 3, 8)
    out = attention(fields)
    changed = fields.clone()
    changed[:, 2] = torch.randn(2, 8)
    assert not torch.allclose(attention(changed)[:, 0], out[:, 0], atol=1e-4)  # field 0 reads field 2
    swapped = fields[:, [1, 0, 2]]
    assert not torch.allclose(attention(swapped)[:, [1, 0, 2]], out, atol=1e-4)  # positions matter
    flat = fields + attention.field_positions
    assert torch.allclose(out, attention.layer(flat) - flat, atol=1e-5)


def test_a_dhen_layer_sums_masknet_cross_and_attention_onto_its_fields_and_normalises():
    torch.manual_seed(4)
    layer = DHENLayer(n_fields=2, dim=8).eval()
    masknet, cross, attention = layer.parallel
    assert (type(masknet), type(cross), type(attention)) == (MaskNet, CrossNetV2, FieldAttention)
    fields = torch.randn(3, 2, 8)
    expected = layer.norm(fields + masknet(fields) + cross(fields) + attention(fields))
    assert torch.allclose(layer(fields), expected, atol=1e-6)
    stacked = FieldCrossing("dhen", n_fields=2, dim=8, layers=2).eval()
    with torch.no_grad():
        stacked.out.weight.normal_()
    x = stacked.stack[1](stacked.stack[0](fields)).flatten(1)
    assert torch.allclose(stacked(fields), x @ stacked.out.weight.T + stacked.out.bias, atol=1e-5)


def test_an_unknown_crossing_and_the_wrong_number_of_fields_are_refused():
    with pytest.raises(ValueError, match="item_crossing must be one of"):
        TwoTowerSettings(item_crossing="fm")
    with pytest.raises(ValueError, match="takes 3 fields, got 2"):
        FieldCrossing("masknet", 3, 4)(torch.randn(1, 2, 4))


def test_the_towers_fields_are_the_items_id_and_attributes_and_the_users_state_item_and_mean():
    torch.manual_seed(5)
    model = two_tower(10, dataclasses.replace(TINY, item_crossing="masknet", user_crossing="dhen"), ATTRIBUTES)
    assert model.item_tower.crossing.n_fields == 2 and model.user_tower.crossing.n_fields == 3
    fields = model.item_tower.features.fields(torch.tensor([3]))
    assert torch.allclose(fields[0, 0], model.item_tower.features.ids.weight[3])
    attribute_mean = model.item_tower.features.attribute_bag.weight[[3, 1]].mean(0)
    assert torch.allclose(fields[0, 1], attribute_mean, atol=1e-6)
    assert two_tower(10, dataclasses.replace(TINY, item_crossing="masknet")).item_tower.crossing.n_fields == 1


@pytest.mark.parametrize("kind", ["masknet", "dhen", "transformer"])
def test_a_crossing_tower_starts_as_the_plain_one_and_learns_on_top_of_it(kind):
    torch.manual_seed(6)
    plain = two_tower(10, TINY, ATTRIBUTES).eval()
    crossed = two_tower(10, dataclasses.replace(TINY, item_crossing=kind, user_crossing=kind), ATTRIBUTES).eval()
    missing, unexpected = crossed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".crossing." in k for k in missing)
    history, items = torch.tensor([[0, 0, 3, 7, 9, 2]]), torch.arange(1, 11)
    assert torch.allclose(crossed.user_tower(history), plain.user_tower(history), atol=1e-6)
    assert torch.allclose(crossed.item_tower(items), plain.item_tower(items), atol=1e-6)
    # one optimiser step on a loss moves the crossings off zero: they are trained, not dead weight
    crossed.train()
    optimizer = torch.optim.SGD(crossed.parameters(), lr=0.5)
    scores = crossed.user_tower(history)[:, 0] @ crossed.item_tower(items).T
    F.cross_entropy(scores / 0.1, torch.tensor([4])).backward()
    optimizer.step()
    crossed.eval()
    assert crossed.item_tower.crossing(crossed.item_tower.features.fields(items)).abs().max() > 0
    fields = crossed.user_tower.crossing.out.weight
    assert fields.abs().max() > 0


@pytest.mark.parametrize("kind", ["masknet", "dhen", "transformer"])
def test_user_crossing_keeps_the_user_tower_causal(kind):
    torch.manual_seed(7)
    model = two_tower(20, dataclasses.replace(TINY, user_crossing=kind)).eval()
    with torch.no_grad():
        model.user_tower.crossing.out.weight.normal_()  # a trained crossing, not the identity at init
    history = torch.tensor([[0, 0, 3, 7, 9, 11]])
    every = model.user_tower(history, every_position=True)
    changed = history.clone()
    changed[0, -1] = 12
    assert torch.allclose(model.user_tower(changed, every_position=True)[0, :-1], every[0, :-1], atol=1e-6)
    assert not torch.allclose(model.user_tower(changed)[0], every[0, -1])


def test_no_crossing_builds_no_module_and_a_crossing_model_saves_and_loads(tmp_path):
    plain = two_tower(10, TINY, ATTRIBUTES)
    assert plain.item_tower.crossing is None and plain.user_tower.crossing is None
    assert not any("crossing" in k for k in plain.state_dict())
    torch.manual_seed(8)
    model = two_tower(10, dataclasses.replace(TINY, item_crossing="dhen", user_crossing="masknet"), ATTRIBUTES)
    with torch.no_grad():
        model.item_tower.crossing.out.weight.normal_()
        model.user_tower.crossing.out.weight.normal_()
    model.eval()
    loaded = load_model(model.save(tmp_path / "m"))
    history = torch.tensor([[0, 1, 2, 3, 4, 5]])
    assert torch.allclose(loaded.user_tower(history), model.user_tower(history), atol=1e-6)
    assert torch.allclose(loaded.all_items(), model.all_items(), atol=1e-6)
    assert loaded.settings.item_crossing == "dhen" and loaded.settings.user_crossing == "masknet"
