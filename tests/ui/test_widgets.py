"""The image pane, the composer and the message view on their own: drop, paste, refuse, remove,
draw boxes, keys, Markdown."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage

from engine.engine import ReadEstimate
from tests.ui.conftest import add_images, drop_files
from ui.composer import Composer
from ui.grounding import BOX_COLORS
from ui.grounding_parser import parse_boxes
from ui.image_pane import ImagePane


def make_pane(qtbot, tmp_path) -> ImagePane:
    pane = ImagePane(lambda: tmp_path)
    qtbot.addWidget(pane)
    pane.resize(500, 500)
    pane.show()
    return pane


def test_dropped_images_are_listed_with_their_cost(qtbot, tmp_path, make_image):
    pane = make_pane(qtbot, tmp_path)
    first, second = make_image("a.png", 640, 480), make_image("b.jpg", 300, 900)
    with qtbot.waitSignal(pane.openingFinished):
        assert drop_files(pane, [first, second])
    assert pane.pending() == [first, second]
    assert [(i.width, i.height) for i in pane.images()] == [(640, 480), (300, 900)]
    assert pane.thumbnails.item(1).text() == "new · …"  # no model yet: cost unknown
    pane.set_cost_function(lambda w, h: ReadEstimate(w * h // 1024, None))  # speed not measured yet
    assert pane.thumbnails.item(0).text() == f"new · {640 * 480 // 1024} tokens"
    pane.set_cost_function(lambda w, h: ReadEstimate(w * h // 1024, w * h / 40_000))
    assert pane.thumbnails.item(0).text() == f"new · {640 * 480 // 1024} tokens\nabout 8 s"
    assert "263 tokens · about 7 s to read" in pane.info.text()  # the newest, shown: 300×900
    assert pane.canvas.image.path == second  # the newest is shown


def test_a_non_image_drop_shows_an_error_and_changes_nothing(qtbot, tmp_path, make_image):
    pane = make_pane(qtbot, tmp_path)
    add_images(qtbot, pane, [make_image("a.png")])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with qtbot.assertNotEmitted(pane.imagesChanged):
        with qtbot.waitSignal(pane.errorOccurred) as blocker:
            drop_files(pane, [notes])
    assert "notes.txt" in blocker.args[0] and "not an image" in blocker.args[0]
    assert [i.path.name for i in pane.images()] == ["a.png"]


def test_sent_images_stay_and_cannot_be_removed(qtbot, tmp_path, make_image):
    pane = make_pane(qtbot, tmp_path)
    add_images(qtbot, pane, [make_image("a.png"), make_image("b.png")])
    pane.remove_current()
    assert [i.path.name for i in pane.images()] == ["a.png"]
    pane.mark_sent()
    assert pane.pending() == [] and not pane.remove_button.isEnabled()
    pane.remove_current()
    assert len(pane.images()) == 1


def test_pasting_an_image_into_the_question_box_attaches_it(qtbot, tmp_path):
    pane = make_pane(qtbot, tmp_path)
    composer = Composer()
    qtbot.addWidget(composer)
    composer.imagePasted.connect(pane.add_mime)
    composer.edit.setPlainText("keep me")
    image = QImage(320, 200, QImage.Format.Format_RGB32)
    image.fill(QColor("darkgreen"))
    QGuiApplication.clipboard().setImage(image)
    with qtbot.waitSignal(pane.imagesChanged):
        composer.edit.paste()
    (attached,) = pane.images()
    assert (attached.width, attached.height) == (320, 200)
    assert attached.path.parent == tmp_path and attached.path.suffix == ".png"
    assert composer.text() == "keep me"


def test_enter_sends_and_shift_enter_adds_a_line(qtbot):
    composer = Composer()
    qtbot.addWidget(composer)
    qtbot.keyClicks(composer.edit, "first line")
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(composer.edit, "second")
    with qtbot.waitSignal(composer.sendRequested) as sent:
        qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert sent.args == ["first line\nsecond"]
    assert composer.text() == ""
    composer.set_busy(True)
    with qtbot.waitSignal(composer.stopRequested):
        qtbot.mouseClick(composer.button, Qt.MouseButton.LeftButton)
    composer.set_busy(False)
    with qtbot.assertNotEmitted(composer.sendRequested):  # nothing to send
        qtbot.keyClick(composer.edit, Qt.Key.Key_Return)


def test_boxes_land_on_the_right_pixels_of_a_non_square_image(qtbot, tmp_path, make_image):
    pane = make_pane(qtbot, tmp_path)
    wide = make_image("wide.png", 800, 200)  # 4:1, letterboxed in the canvas
    add_images(qtbot, pane, [wide])
    answer = '```json\n[{"bbox_2d": [250, 500, 750, 1000], "label": "thing"}]\n```'
    pane.set_boxes(wide, parse_boxes(answer))
    qtbot.waitExposed(pane)
    shot = pane.canvas.grab().toImage()
    drawn = pane.canvas.image_rect()
    assert abs(drawn.width() / drawn.height() - 4.0) < 0.05
    # Expected box, computed by hand from the 0..1000 convention on the drawn image.
    left = drawn.x() + 0.25 * drawn.width()
    right = drawn.x() + 0.75 * drawn.width()
    top = drawn.y() + 0.5 * drawn.height()
    bottom = drawn.y() + drawn.height()
    ratio = shot.width() / pane.canvas.width()  # device pixel ratio of the grab

    def color_at(x: float, y: float) -> QColor:
        return shot.pixelColor(QPoint(round(x * ratio), round(y * ratio)))

    box_color = QColor(BOX_COLORS[0])

    def is_box_color(color: QColor) -> bool:
        return all(abs(a - b) < 40 for a, b in zip(color.getRgb()[:3], box_color.getRgb()[:3]))

    def line_near(x: float, y: float, dx: int, dy: int) -> bool:
        """The 2-px antialiased outline crosses (x, y) give or take 2 px along (dx, dy)."""
        return any(is_box_color(color_at(x + k * dx, y + k * dy)) for k in range(-2, 3))

    middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
    assert line_near(left, middle_y, 1, 0) and line_near(right, middle_y, 1, 0)
    assert line_near(middle_x, top, 0, 1) and line_near(middle_x, bottom, 0, 1)
    # ...and nowhere near where a square-image (or swapped-axis) mapping would have put it.
    assert not line_near(drawn.x() + 0.5 * drawn.width(), middle_y, 1, 0)
    assert not line_near(middle_x, drawn.y() + 0.25 * drawn.height(), 0, 1)
    inside = color_at(middle_x, middle_y)
    assert inside.name() == "#f0f0f0"  # the image itself, not painted over
    outside_left = color_at(left - 0.1 * drawn.width(), middle_y)
    assert outside_left.name() == "#f0f0f0"


def test_pane_shows_images_the_way_the_engine_sees_them(qtbot, tmp_path):
    from PIL import Image

    pane = make_pane(qtbot, tmp_path)
    # EXIF orientation 6 (rotate 90° clockwise): stored 300x100, seen upright as 100x300.
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 100), (10, 200, 10)).save(rotated, exif=exif)
    # PCX: Pillow reads it (so the engine does), Qt has no plugin for it.
    pcx = tmp_path / "old.pcx"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(pcx)
    with qtbot.assertNotEmitted(pane.errorOccurred):
        add_images(qtbot, pane, [rotated, pcx])
    shown_rotated, shown_pcx = pane.images()
    assert (shown_rotated.width, shown_rotated.height) == (100, 300)
    assert shown_rotated.pixmap.size().toTuple() == (100, 300)
    assert shown_pcx.pixmap.size().toTuple() == (40, 30)
    assert shown_pcx.pixmap.toImage().pixelColor(5, 5).name() == "#c80a0a"


def test_answers_render_markdown_but_not_raw_html(qtbot):
    from PySide6.QtGui import QFont

    from ui.chat_view import MessageWidget

    message = MessageWidget("assistant")
    qtbot.addWidget(message)
    for piece in ("Some **bold", "** text\n\n- one\n- two\n\n", "<b>not bold</b> <img src='x.png'>"):
        message.append(piece)  # streamed pieces may split the Markdown anywhere
    message.finish("12 tokens")
    document = message.body.document()
    assert document.toPlainText().startswith("Some bold text\none\ntwo\n")
    assert "<b>not bold</b> <img src='x.png'>" in document.toPlainText()  # shown, not obeyed
    block = document.begin()
    weights = []
    iterator = block.begin()
    while not iterator.atEnd():
        fragment = iterator.fragment()
        weights.append((fragment.text(), fragment.charFormat().fontWeight() >= QFont.Weight.Bold))
        iterator += 1
    assert ("bold", True) in weights and ("Some ", False) in weights
    assert document.begin().next().textList() is not None  # "- one" became a real list
    assert message.markdown().startswith("Some **bold** text") and message.stats.text() == "12 tokens"
