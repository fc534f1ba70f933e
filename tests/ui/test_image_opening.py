"""Images are checked and decoded on the pane's own thread: the window stays live while a big photo
opens, files keep the order they were added in, refusals are told as before, and a file removed
(or a chat cleared, or the pane closed) while it is being opened leaves nothing behind."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QTimer

from tests.ui.conftest import add_images, drop_files
from ui.image_pane import ImagePane

WAIT = 10_000


@pytest.fixture
def pane(qtbot, tmp_path):
    pane = ImagePane(lambda: tmp_path)
    qtbot.addWidget(pane)
    pane.resize(500, 500)
    pane.show()
    return pane


def test_an_image_is_opened_off_the_gui_thread_while_the_window_stays_live(qtbot, pane, make_image, held_loader):
    loader = held_loader
    photo = make_image("photo.png", 640, 480)
    pane.add_files([photo])
    # add_files returned with the loader still holding: the file is listed, not yet accepted.
    assert pane.opening() == [photo] and pane.images() == [] and pane.pending() == []
    assert pane.thumbnails.item(0).text() == "opening…" and "photo.png · opening…" in pane.info.text()
    ticks = []
    QTimer.singleShot(10, lambda: ticks.append("tick"))
    qtbot.waitUntil(lambda: ticks == ["tick"], timeout=2_000)  # the event loop runs meanwhile
    assert loader.started.wait(5) and not loader.returned.is_set()  # ...while the loader holds
    with qtbot.waitSignal(pane.imagesChanged, timeout=WAIT):
        loader.release.set()
    assert loader.threads and threading.get_ident() not in loader.threads
    assert pane.pending() == [photo] and (pane.images()[0].width, pane.images()[0].height) == (640, 480)
    assert pane.thumbnails.item(0).text() == "new · …" and pane.canvas.image.path == photo


def test_files_keep_their_order_and_refusals_are_told_together_after_the_images(qtbot, pane, make_image, tmp_path):
    first, second = make_image("first.png", 300, 200), make_image("second.jpg", 200, 300)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG header and nothing usable
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    told = []
    pane.imagesChanged.connect(lambda: told.append("images"))
    pane.errorOccurred.connect(lambda message: told.append(message))
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        assert drop_files(pane, [first, broken, second, notes])
    assert pane.pending() == [first, second] and pane.opening() == []
    assert [pane.thumbnails.item(row).text() for row in range(pane.thumbnails.count())] == ["new · …"] * 2
    *images, error = told
    assert images == ["images", "images"]  # each accepted in its place; then the refusals, once
    broken_line, notes_line = error.split("\n")
    assert "broken.png" in broken_line and "notes.txt" in notes_line and "not an image" in notes_line


def test_a_file_added_later_waits_for_the_ones_before_it(qtbot, pane, make_image, held_loader):
    loader = held_loader
    first, second = make_image("first.png"), make_image("second.png")
    pane.add_files([first])
    pane.add_files([second])
    assert pane.opening() == [first, second]
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        loader.release.set()
    assert pane.pending() == [first, second] and loader.names == ["first.png", "second.png"]


def test_removing_a_file_while_it_opens_leaves_no_thumbnail_behind(qtbot, pane, make_image, held_loader):
    loader = held_loader
    kept, dropped = make_image("kept.png"), make_image("dropped.png")
    loader.release.set()
    add_images(qtbot, pane, [kept])  # accepted; the next file is held
    loader.release.clear()
    loader.returned.clear()
    loader.started.clear()
    pane.add_files([dropped])
    assert loader.started.wait(5)  # being opened, not only asked for
    pane.thumbnails.setCurrentRow(1)
    assert pane.remove_button.isEnabled()  # a file being opened can be removed like a pending image
    with qtbot.waitSignal(pane.imagesChanged):
        pane.remove_current()
    assert pane.opening() == [] and pane.thumbnails.count() == 1
    with qtbot.assertNotEmitted(pane.imagesChanged), qtbot.assertNotEmitted(pane.errorOccurred):
        loader.release.set()
        assert loader.returned.wait(5)
        qtbot.wait(100)  # time for the result to arrive, and be dropped
    assert pane.pending() == [kept] and pane.thumbnails.count() == 1


def test_a_new_chat_drops_the_files_still_being_opened(qtbot, pane, make_image, held_loader):
    loader = held_loader
    pane.add_files([make_image("old.png")])
    assert loader.started.wait(5)
    pane.clear()
    assert pane.thumbnails.count() == 0 and pane.opening() == []
    with qtbot.assertNotEmitted(pane.imagesChanged):
        loader.release.set()
        assert loader.returned.wait(5)
        qtbot.wait(100)
    assert pane.images() == [] and pane.thumbnails.count() == 0


def test_closing_while_files_are_opened_waits_for_the_one_running_and_drops_the_rest(
    qtbot, tmp_path, make_image, held_loader
):
    from ui.image_opener import ImageOpener

    loader, opener = held_loader, ImageOpener()  # as the window's, which it closes
    pane = ImagePane(lambda: tmp_path, opener)
    qtbot.addWidget(pane)
    pane.add_files([make_image("a.png"), make_image("b.png")])
    assert loader.started.wait(5)
    threading.Timer(0.2, loader.release.set).start()  # the GUI thread is inside close() meanwhile
    with qtbot.assertNotEmitted(pane.imagesChanged):
        opener.close()  # returns once the running open is over
        assert loader.returned.is_set()
        qtbot.wait(100)
    assert loader.names == ["a.png"]  # b.png was never started


def test_a_reopened_chats_thumbnails_are_made_off_the_gui_thread_and_reach_only_live_messages(
    qtbot, make_image, monkeypatch
):
    import ui.chat_view
    from ui.chat_view import ChatView, MessageWidget

    real, opened, release = ui.chat_view.thumbnail_image, [], threading.Event()

    def held(path):
        opened.append((path.name, threading.get_ident()))
        release.wait(5)
        return real(path)

    shown = []
    real_set = MessageWidget.set_thumbnail
    monkeypatch.setattr(ui.chat_view, "thumbnail_image", held)
    monkeypatch.setattr(
        MessageWidget, "set_thumbnail", lambda self, i, image: shown.append((self, i)) or real_set(self, i, image)
    )
    chat = ChatView()
    qtbot.addWidget(chat)
    message = chat.add_user("What is it?", [make_image("a.png", 640, 480), make_image("wide.png", 800, 200)])
    assert [label.toolTip() for label in message.thumbnails] == ["a.png", "wide.png"]
    assert all(label.pixmap().isNull() for label in message.thumbnails)  # not made yet: add_user returned
    chat.add_user("Removed before its thumbnail came", [make_image("gone.png")])
    chat.remove_last()
    release.set()
    qtbot.waitUntil(lambda: len(shown) >= 2, timeout=WAIT)
    qtbot.wait(100)  # time for anything else to arrive
    assert shown == [(message, 0), (message, 1)]  # each of its own, none to the removed message
    assert [label.pixmap().size().toTuple() for label in message.thumbnails] == [(64, 48), (64, 16)]
    assert [name for name, _ in opened] == ["a.png", "wide.png"]  # the removed one was never decoded
    assert threading.get_ident() not in {thread for _, thread in opened}


def test_a_thumbnail_is_decoded_at_thumbnail_size_and_upright(tmp_path, monkeypatch):
    from PIL import Image
    from PySide6.QtGui import QImageReader

    import ui.image_opener

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn
    Image.new("RGB", (2400, 600), (20, 120, 200)).save(tmp_path / "turned.jpg", exif=exif)

    def full_decode(path, *args):
        raise AssertionError("decoded the whole photo for a thumbnail")

    monkeypatch.setattr(ui.image_opener, "read_image", full_decode)
    limit = QImageReader.allocationLimit()
    QImageReader.setAllocationLimit(2)  # megabytes: the whole photo (5.8 MB decoded) would be refused
    try:
        thumbnail = ui.image_opener.thumbnail_image(tmp_path / "turned.jpg")
    finally:
        QImageReader.setAllocationLimit(limit)
    assert thumbnail.size().toTuple() == (16, 64)


def test_a_result_sent_just_before_close_is_not_delivered_after_it(qtbot, make_image):
    from ui.image_opener import ImageOpener

    opener = ImageOpener()
    delivered = []
    opener.opened.connect(lambda ticket, result: delivered.append(ticket))
    returned = threading.Event()
    opener.open(make_image("a.png"), lambda path: returned.set() or "done")
    assert returned.wait(5)
    opener._pool.waitForDone(5_000)  # the result is on its way to this thread, not handled yet
    opener.close()
    qtbot.wait(100)
    assert delivered == []


def test_files_of_a_chat_left_or_removed_are_not_opened(qtbot, pane, make_image, held_loader):
    loader = held_loader
    pane.add_files([make_image("old.png"), make_image("old-too.png")])
    assert loader.started.wait(5)
    pane.clear()  # a new chat while old.png is being opened
    pane.add_files([make_image("a.png"), make_image("removed.png"), make_image("b.png")])
    pane.thumbnails.setCurrentRow(1)
    pane.remove_current()
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        loader.release.set()
    assert loader.names == ["old.png", "a.png", "b.png"]  # the new chat's files did not wait behind old ones
    assert [image.path.name for image in pane.images()] == ["a.png", "b.png"]


def test_opening_files_keeps_the_list_and_the_users_selection(qtbot, pane, make_image, held_loader):
    loader = held_loader
    pane.add_files([make_image("a.png"), make_image("b.png"), make_image("c.png")])
    assert pane.thumbnails.currentRow() == 2  # the newest file the user added is selected at once
    pane.thumbnails.setCurrentRow(0)  # the user looks at another one meanwhile
    pane.add_files([make_image("old.png"), make_image("old-too.png")], sent=True)  # as a reopened chat adds
    assert pane.thumbnails.currentRow() == 0
    first = pane.thumbnails.item(0)
    loader.release.set()
    qtbot.waitUntil(lambda: not pane.opening(include_sent=True), timeout=WAIT)
    assert pane.thumbnails.currentRow() == 0 and pane.canvas.image.path.name == "a.png"
    assert pane.thumbnails.item(0) is first and first.text() == "new · …"  # updated in place, not rebuilt


def test_a_file_refused_before_the_selected_one_leaves_the_selection_on_it(
    qtbot, pane, make_image, tmp_path, held_loader
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    pane.add_files([broken, make_image("old.png")], sent=True)  # a reopened chat whose first image is damaged
    pane.add_files([make_image("a.png"), make_image("b.png")])
    pane.thumbnails.setCurrentRow(2)  # a.png
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        held_loader.release.set()
    assert [image.path.name for image in pane.images()] == ["old.png", "a.png", "b.png"]
    assert pane.current().path.name == "a.png" and pane.canvas.image.path.name == "a.png"


def test_read_ahead_marks_only_the_pending_images_read(qtbot, tmp_path, make_image):
    """mark_read counts over the images the next question takes, as pending() lists them."""
    from PySide6.QtCore import QObject, Signal

    from ui.image_opener import open_image

    class ManualOpener(QObject):  # delivers results when the test says, in any order
        opened = Signal(int, object)

        def __init__(self):
            super().__init__()
            self.paths = []

        def open(self, path, open_file=open_image):
            self.paths.append(path)
            return len(self.paths)

        def drop(self, tickets):
            pass

        def finish(self, ticket):
            self.opened.emit(ticket, open_image(self.paths[ticket - 1]))

    opener = ManualOpener()
    pane = ImagePane(lambda: tmp_path, opener)
    qtbot.addWidget(pane)
    pane.add_files([make_image("a.png"), make_image("b.png"), make_image("c.png")])
    opener.finish(1)
    opener.finish(3)  # c is in before b: the next question still takes only a
    assert pane.pending() == [make_image("a.png")]
    pane.mark_read(2)
    assert [(image.path.name, image.read) for image in pane.images()] == [("a.png", True), ("c.png", False)]


def pasted_bitmap(width: int = 320, height: int = 200):
    from PySide6.QtGui import QColor, QImage

    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor("teal"))
    return image


def test_a_pasted_bitmap_is_written_as_png_off_the_gui_thread_and_once(qtbot, pane, tmp_path, monkeypatch):
    import ui.image_pane as image_pane

    threads, real = [], image_pane.save_and_open
    monkeypatch.setattr(image_pane, "save_and_open", lambda *a: threads.append(threading.get_ident()) or real(*a))
    with qtbot.waitSignal(pane.imagesChanged, timeout=WAIT):
        pane.add_qimage(pasted_bitmap())
    (attached,) = pane.images()
    assert (attached.width, attached.height) == (320, 200) and attached.path.parent == tmp_path
    assert threads and threading.get_ident() not in threads  # converted, named and encoded on the opener's thread
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        pane.add_qimage(pasted_bitmap())  # the same pixels again: the same file, not a second image
    assert len(pane.images()) == 1 and pane.opening() == [] and pane.thumbnails.count() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [attached.path.name]


def test_two_pastes_saved_at_once_are_two_images(qtbot, pane):
    other = pasted_bitmap(200, 100)
    with qtbot.waitSignal(pane.openingFinished, timeout=WAIT):
        pane.add_qimage(pasted_bitmap())
        pane.add_qimage(other)  # before the first is saved: both are listed under the stand-in name
    assert [(image.width, image.height) for image in pane.images()] == [(320, 200), (200, 100)]


def test_a_pasted_bitmap_that_cannot_be_saved_is_refused_and_leaves_nothing(qtbot, tmp_path):
    missing = tmp_path / "gone"  # the attachments folder vanished: the PNG cannot be written
    pane = ImagePane(lambda: missing)
    qtbot.addWidget(pane)
    with qtbot.waitSignal(pane.errorOccurred, timeout=WAIT) as refused:
        pane.add_qimage(pasted_bitmap())
    assert "Could not save the pasted image" in refused.args[0]
    assert pane.images() == [] and pane.opening() == [] and not missing.exists()
