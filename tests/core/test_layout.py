"""Layouts: every site presents ``(batch, positions, channels)`` and writes back the native form."""

from __future__ import annotations

import pytest
import torch

from polysteer.steering.layout import BCHW, BCT, BPC, InTuple, MaybeTuple, layout_named


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("lay", "native", "bpc_shape"), [
    (BPC(), _t(2, 5, 3), (2, 5, 3)),
    (BCT(), _t(2, 3, 7), (2, 7, 3)),
    (BCHW(), _t(2, 3, 4, 5), (2, 20, 3)),
])
def test_read_write_round_trip_is_exact(lay, native, bpc_shape):
    x = lay.read(native)
    assert tuple(x.shape) == bpc_shape
    back = lay.write(native, x)
    assert back.shape == native.shape
    assert torch.equal(back, native)


def test_bct_positions_are_time_frames():
    native = _t(2, 3, 7)  # (B, C, T)
    x = BCT().read(native)
    assert torch.equal(x[1, 4], native[1, :, 4])
    assert BCT().grid(native) is None


def test_bchw_positions_are_row_major_cells_and_grid_is_h_w():
    native = _t(2, 3, 4, 5)  # (B, C, H, W)
    x = BCHW().read(native)
    for h in range(4):
        for w in range(5):
            assert torch.equal(x[:, h * 5 + w], native[:, :, h, w])
    assert BCHW().grid(native) == (4, 5)
    assert BPC().grid(_t(1, 3, 2)) is None


def test_writing_a_changed_bpc_gives_the_right_native_tensor():
    native = _t(1, 2, 3, 4)  # (B, C, H, W)
    x = BCHW().read(native).clone()
    x[0, 1 * 4 + 2, 1] = 100.0  # cell (h=1, w=2), channel 1
    back = BCHW().write(native, x)
    expected = native.clone()
    expected[0, 1, 1, 2] = 100.0
    assert torch.equal(back, expected)

    native = _t(1, 3, 6)  # (B, C, T)
    x = BCT().read(native).clone()
    x[0, 4, 2] = -7.0  # frame 4, channel 2
    expected = native.clone()
    expected[0, 2, 4] = -7.0
    assert torch.equal(BCT().write(native, x), expected)

    native = _t(2, 3, 4)
    new = native + 1
    assert torch.equal(BPC().write(native, new), new)


def test_in_tuple_reads_its_item_and_keeps_the_others():
    hidden, extra, other = _t(2, 3, 4), _t(5), "meta"
    native = (extra, hidden, other)
    lay = InTuple(BPC(), index=1)
    assert lay.read(native) is hidden
    new = hidden * 2
    back = lay.write(native, new)
    assert isinstance(back, tuple) and len(back) == 3
    assert back[0] is extra and back[2] is other
    assert torch.equal(back[1], new)
    # the round trip without a change is exact
    assert torch.equal(lay.write(native, lay.read(native))[1], hidden)


def test_in_tuple_keeps_list_type_and_inner_layout():
    native = [_t(1, 3, 2, 2), _t(4)]
    lay = InTuple(BCHW())
    x = lay.read(native)
    assert x.shape == (1, 4, 3)
    assert lay.grid(native) == (2, 2)
    back = lay.write(native, x + 1)
    assert isinstance(back, list)
    assert torch.equal(back[0], native[0] + 1)
    assert back[1] is native[1]


def test_maybe_tuple_handles_tensor_and_tuple():
    hidden = _t(2, 3, 4)
    lay = MaybeTuple(BPC())
    assert lay.read(hidden) is hidden
    assert torch.equal(lay.write(hidden, hidden + 1), hidden + 1)
    present = _t(1)
    native = (hidden, present)
    assert lay.read(native) is hidden
    back = lay.write(native, hidden + 1)
    assert isinstance(back, tuple) and back[1] is present
    assert torch.equal(back[0], hidden + 1)
    assert lay.grid(native) is None
    image = (_t(1, 2, 3, 5),)
    assert MaybeTuple(BCHW()).grid(image) == (3, 5)


def test_layout_by_name():
    assert isinstance(layout_named("bpc"), BPC)
    assert isinstance(layout_named("bct"), BCT)
    assert isinstance(layout_named("bchw"), BCHW)
    lay = layout_named("tuple:bchw")
    assert isinstance(lay, InTuple) and isinstance(lay.inner, BCHW) and lay.index == 0
    native = (_t(2, 3, 4, 4), None)
    assert lay.read(native).shape == (2, 16, 3)
    assert lay.grid(native) == (4, 4)


@pytest.mark.parametrize("name", ["bhwc", "BPC", "tuple:", "tuple:nope", "", "bpc:tuple"])
def test_bad_layout_names_error_with_choices(name):
    with pytest.raises(ValueError, match="bchw") as info:
        layout_named(name)
    assert repr(name) in str(info.value)
