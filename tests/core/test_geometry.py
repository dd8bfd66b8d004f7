"""Geometry: boxes compose back to input coordinates exactly, crops stay inside."""

from __future__ import annotations

import math

import pytest

from chainzoom.core.geometry import Box, default_view, plan_zoom, resolve_center, resolve_view, step_factors
from chainzoom.errors import ChainZoomError


def test_power_of_four_scale_is_whole_steps():
    assert step_factors(256) == [4.0, 4.0, 4.0, 4.0]
    assert step_factors(4) == [4.0]


def test_fractional_scale_puts_the_remainder_last():
    factors = step_factors(100)
    assert factors[:3] == [4.0, 4.0, 4.0]
    assert math.isclose(factors[-1], 100 / 64)
    assert math.isclose(math.prod(factors), 100)
    assert step_factors(2) == [2.0]


@pytest.mark.parametrize("scale", [1, 0.5, -4, float("nan"), float("inf")])
def test_scale_must_exceed_one(scale):
    with pytest.raises(ChainZoomError, match="^scale"):
        step_factors(scale)


def test_default_view_keeps_small_inputs_and_shrinks_large_ones():
    assert default_view((512, 512)) == (512, 512)
    assert default_view((451, 300)) == (448, 300)  # rounded down to the step factor
    assert default_view((4000, 3000)) == (512, 384)
    assert default_view((1024, 700)) == (1024, 700)


def test_centred_x256_plan_matches_the_official_crops():
    plan = plan_zoom((512, 512), 256)
    assert plan.steps[0].crop.width == 128
    assert [s.box for s in plan.steps] == [
        Box(192, 192, 320, 320),
        Box(240, 240, 272, 272),
        Box(252, 252, 260, 260),
        Box(255, 255, 257, 257),
    ]
    assert [plan.magnification(i) for i in range(5)] == [1, 4, 16, 64, 256]


def test_boxes_compose_back_to_input_coordinates_exactly():
    """Each box equals its crop mapped through the previous state's box, with no rounding."""
    plan = plan_zoom((640, 480), 1024, center=(100.3, 400.9))
    src_box, src_size = Box(0, 0, 640, 480), (640, 480)
    for step in plan.steps:
        sx = src_box.width / src_size[0]
        expected = Box(
            src_box.x0 + step.crop.left * sx,
            src_box.y0 + step.crop.top * sx,
            src_box.x0 + (step.crop.left + step.crop.width) * sx,
            src_box.y0 + (step.crop.top + step.crop.height) * sx,
        )
        assert step.box == expected
        relative = step.box.relative_to(src_box, src_size)
        assert relative == Box(
            step.crop.left, step.crop.top, step.crop.left + step.crop.width, step.crop.top + step.crop.height
        )
        src_box, src_size = step.box, plan.view
    assert plan.final_box.width * 1024 == 640


def test_zoom_point_stays_inside_every_box_and_crops_stay_inside_sources():
    center = (630.0, 5.0)  # near the top-right corner: clamping must kick in
    plan = plan_zoom((640, 480), 256, center=center)
    for step in plan.steps:
        box = step.box
        assert box.x0 <= center[0] <= box.x1 and box.y0 <= center[1] <= box.y1
        assert box.x0 >= 0 and box.x1 <= 640 and box.y0 >= 0 and box.y1 <= 480
        assert step.crop.left >= 0 and step.crop.top >= 0
    assert plan.steps[0].box.x1 == 640 and plan.steps[0].box.y0 == 0


def test_large_input_crops_step_one_from_full_resolution():
    plan = plan_zoom((4000, 3000), 16)
    assert plan.view == (512, 384)
    first = plan.steps[0]
    assert first.source == "input"
    assert (first.crop.width, first.crop.height) == (128, 96)  # native input pixels, not the 512 view
    assert plan.magnification(0) == 512 / 4000
    assert plan.magnification(1) == 4 and plan.magnification(2) == 16


def test_fractional_last_step_reaches_the_requested_scale():
    plan = plan_zoom((512, 512), 100)
    assert len(plan.steps) == 4
    assert math.isclose(plan.magnification(4), 100, rel_tol=0.01)


def test_view_larger_than_the_input_allows_is_refused():
    with pytest.raises(ChainZoomError, match="view"):
        plan_zoom((100, 100), 4, view=(1024, 1024))


def test_parse_center_fractions_and_pixels():
    assert resolve_center("0.25,0.5", (400, 200)) == (100, 100)
    assert resolve_center("px:10,20", (400, 200)) == (10, 20)
    assert resolve_center((0.25, 0.5), (400, 200)) == (100, 100)
    for bad in ("1.5,0.5", "px:500,1", "abc", "0.5"):
        with pytest.raises(ChainZoomError, match="^center"):
            resolve_center(bad, (400, 200))


def test_resolve_view():
    assert resolve_view("256", (512, 384)) == resolve_view(256, (512, 384)) == (256, 192)
    assert resolve_view("130x66", (512, 384)) == resolve_view((130, 66), (512, 384)) == (128, 64)
    for bad in ("0", "axb", "-5"):
        with pytest.raises(ChainZoomError, match="view"):
            resolve_view(bad, (512, 384))
