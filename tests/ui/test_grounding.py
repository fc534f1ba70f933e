"""Parsing Qwen-style grounding answers, and where the boxes land on a non-square image."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRectF, QSizeF

from ui.grounding import box_rect, fitted_image_rect
from ui.grounding_parser import GroundingBox, parse_boxes


def coords(box: GroundingBox) -> tuple:
    return (box.label, box.x1, box.y1, box.x2, box.y2)


def test_fenced_json_list_as_qwen_writes_it():
    answer = (
        "Here are the objects:\n```json\n[\n"
        '\t{"bbox_2d": [135, 79, 420, 913], "label": "cat"},\n'
        '\t{"bbox_2d": [500, 100, 990, 880], "label": "dog"}\n]\n```\nAnything else?'
    )
    assert [coords(b) for b in parse_boxes(answer)] == [
        ("cat", 135, 79, 420, 913),
        ("dog", 500, 100, 990, 880),
    ]


def test_single_object_in_prose_and_python_quotes():
    assert [coords(b) for b in parse_boxes('The cup is at {"bbox_2d": [10, 20, 30, 40], "label": "cup"}.')] == [
        ("cup", 10, 20, 30, 40)
    ]
    assert [coords(b) for b in parse_boxes("{'bbox_2d': [1, 2, 3, 4], 'label': 'pen'}")] == [("pen", 1, 2, 3, 4)]


def test_trailing_comma_and_a_list_cut_off_by_the_token_limit():
    answer = (
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"},\n'
        ' {"bbox_2d": [5, 6, 7, 8], "label": "b"},\n {"bbox_2d": [9,'
    )
    assert [b.label for b in parse_boxes(answer)] == ["a", "b"]
    assert [b.label for b in parse_boxes('[{"bbox_2d": [1, 2, 3, 4], "label": "a",},]')] == ["a"]


def test_nested_objects_and_duplicates():
    answer = '{"objects": [{"bbox_2d": [1, 2, 3, 4], "label": "a"}]} again: {"bbox_2d": [1, 2, 3, 4], "label": "a"}'
    assert [coords(b) for b in parse_boxes(answer)] == [("a", 1, 2, 3, 4)]


def test_coordinates_are_clamped_and_ordered():
    (box,) = parse_boxes('{"bbox_2d": [900, 800, 100, 1200], "label": 7}')
    assert coords(box) == ("7", 100, 800, 900, 1000)


@pytest.mark.parametrize(
    "text",
    [
        "No boxes here, just [a link](http://x) and {braces}.",
        '{"bbox_2d": [1, 2, 3], "label": "three numbers"}',
        '{"bbox_2d": ["a", 2, 3, 4], "label": "not numbers"}',
        '{"bbox_2d": [5, 5, 5, 9], "label": "no width"}',
        '{"box": [1, 2, 3, 4], "label": "wrong key"}',
        "",
    ],
)
def test_things_that_are_not_boxes(text):
    assert parse_boxes(text) == []


def test_relative_coordinates_scale_each_axis_separately():
    # 0..1000 on both axes of a 1600x900 image: x scales by 1.6, y by 0.9.
    box = GroundingBox("x", 250, 500, 750, 1000)
    assert box.in_pixels(1600, 900) == pytest.approx((400, 450, 1200, 900))


def test_letterboxed_non_square_image_on_screen():
    # A 400x200 image fitted into a 300x300 area is 300x150, centred: 75 px bars above and below.
    drawn = fitted_image_rect(QSizeF(400, 200), QRectF(0, 0, 300, 300))
    assert (drawn.x(), drawn.y(), drawn.width(), drawn.height()) == (0, 75, 300, 150)
    whole = box_rect(GroundingBox("all", 0, 0, 1000, 1000), drawn)
    assert whole == drawn
    quarter = box_rect(GroundingBox("bottom right", 500, 500, 1000, 1000), drawn)
    assert (quarter.x(), quarter.y(), quarter.width(), quarter.height()) == (150, 150, 150, 75)
    # A tall image in a wide area: bars left and right instead.
    tall = fitted_image_rect(QSizeF(100, 400), QRectF(10, 20, 400, 200))
    assert (tall.x(), tall.y(), tall.width(), tall.height()) == (185, 20, 50, 200)
