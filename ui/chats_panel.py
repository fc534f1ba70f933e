"""The list of saved chats beside the conversation: open, export, delete, start a new one."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ui.chat_store import ConversationSummary


class ChatsPanel(QWidget):
    """Saved chats, newest first; click to reopen, right-click to delete or export."""

    openRequested = Signal(str)
    deleteRequested = Signal(str)
    exportRequested = Signal(str)
    newChatRequested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setObjectName("historyList")
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemClicked.connect(lambda item: self.openRequested.emit(self._id(item)))
        self.list.itemActivated.connect(lambda item: self.openRequested.emit(self._id(item)))
        new_chat = QToolButton(text="New chat", autoRaise=True)
        new_chat.setToolTip("Start a new chat (Ctrl+N)")
        new_chat.clicked.connect(self.newChatRequested)
        title = QLabel("Chats")
        title.setObjectName("paneTitle")
        row = QHBoxLayout()
        row.addWidget(title)
        row.addStretch(1)
        row.addWidget(new_chat)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.list)

    def show_chats(self, summaries: list[ConversationSummary], current_id: str) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for summary in summaries:
            item = QListWidgetItem(summary.title)
            item.setData(Qt.ItemDataRole.UserRole, summary.id)
            item.setToolTip(f"{summary.title}\n{summary.turn_count} questions · {summary.updated}")
            self.list.addItem(item)
            if summary.id == current_id:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def clear_selection(self) -> None:
        """No saved chat is the one shown (a new chat is not saved until it has a turn)."""
        self.list.clearSelection()

    @staticmethod
    def _id(item: QListWidgetItem) -> str:
        return item.data(Qt.ItemDataRole.UserRole)

    def _menu(self, position) -> None:
        item = self.list.itemAt(position)
        if item is None:
            return
        menu = QMenu(self)
        menu.addAction("Open", lambda: self.openRequested.emit(self._id(item)))
        menu.addAction("Export to Markdown…", lambda: self.exportRequested.emit(self._id(item)))
        menu.addAction("Delete", lambda: self.deleteRequested.emit(self._id(item)))
        menu.exec(self.list.viewport().mapToGlobal(position))
