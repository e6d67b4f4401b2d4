"""The chain families: MobileNet-V1's width grid, geometry and counts; the text classifier."""

from widthwise.device_agents.spaces import block_counts, make_space, width_grid


def test_mobilenet_grid_has_6_11_then_14_choices_and_about_2400_unknowns():
    space = make_space("mobilenet_v1")
    assert [len(l.choices) for l in space.layers] == [6, 11] + [14] * 12
    assert space.layers[0].choices == (8, 16, 24, 32, 40, 48)
    unknowns = sum(
        len(space.block_in_choices(k)) * len(space.block_out_choices(k)) for k in range(space.num_layers + 1)
    )
    assert unknowns == 2396


def test_width_grid_is_rounded_to_multiples_of_8_at_least_8_and_deduplicated():
    grid = width_grid(128, 14)
    assert grid == (24, 40, 48, 64, 80, 88, 104, 112, 128, 144, 152, 168, 176, 192)
    assert all(w % 8 == 0 and w >= 8 for w in width_grid(16, 30))
    assert len(set(width_grid(16, 30))) == len(width_grid(16, 30))


def test_mobilenet_base_counts_match_the_published_network():
    # MobileNet-V1 1.0 at 224: about 569 M multiply-accumulates and 4.2 M parameters.
    macs, params = make_space("mobilenet_v1").counts(make_space("mobilenet_v1").base_widths())
    assert macs == 568_740_352
    assert params == 4_221_032


def test_spatial_sizes_follow_the_strides_with_same_padding():
    space = make_space("mobilenet_v1", {"resolution": 200})
    hws = [(t.in_hw, t.out_hw) for t in space.templates]
    assert hws[0] == (200, 100)
    assert hws[-2][1] == 7  # 200 -> 100 -> 50 -> 25 -> 13 -> 7
    assert space.templates[-1].kind == "pool_fc"


def test_blocks_chain_input_and_output_channels():
    space = make_space("mobilenet_v1")
    blocks = space.blocks(space.smallest())
    assert blocks[0].cin == 3 and blocks[-1].cout == 1000
    assert all(a.cout == b.cin for a, b in zip(blocks, blocks[1:]))
    assert all(b.hidden == 0 and not b.residual for b in blocks)


def test_counts_per_block_by_hand():
    space = make_space("mobilenet_v1")
    stem = space.block_at(0, 3, 32)
    assert block_counts(stem) == (112 * 112 * 27 * 32, 27 * 32 + 32)
    dw = space.block_at(2, 64, 128)  # stride 2: 112 -> 56
    assert block_counts(dw) == (56 * 56 * (9 * 64 + 64 * 128), 9 * 64 + 64 + 64 * 128 + 128)
    text = make_space("text_lowrank", {"vocab": 1000, "dim": 300, "tokens": 32})
    emb, proj, cls = text.blocks((30, 128))
    assert block_counts(emb) == (0, 1000 * 30)
    assert block_counts(proj) == (32 * 30 * 300 + 300 * 128, 30 * 300 + 300 * 128 + 128)
    assert block_counts(cls) == (128 * 20, 128 * 20 + 20)


def test_chain_families_are_chains_of_l_plus_1_factors():
    for name, layers in (("mobilenet_v1", 14), ("text_lowrank", 2)):
        space = make_space(name)
        assert space.is_chain
        assert [f.variables for f in space.factors] == [(0,)] + [(k - 1, k) for k in range(1, layers)] + [
            (layers - 1,)]
        assert all(l.group == "" for l in space.layers)
