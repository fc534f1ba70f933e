"""Iris: chat about images with Qwen3-VL on your own CPU.

python main.py                      open the app (the setup wizard first if no model is found)
python main.py photo.jpg            open the app with an image attached
python main.py --model-dir DIR --smoke IMAGE PROMPT --screenshot OUT.png
                                    automation: real window, one greedy answer printed, a
                                    screenshot, exit 0; a refused question or any error exits 1
                                    with its message, and the run's chats and settings are
                                    thrown away
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    from ui.app import COLOR_SCHEMES

    parser = argparse.ArgumentParser(prog="iris", description="Chat about images, privately.")
    parser.add_argument("images", nargs="*", type=Path, help="images to attach at start")
    parser.add_argument("--model-dir", type=Path, help="exported model folder (default: settings)")
    parser.add_argument(
        "--smoke",
        nargs=2,
        metavar=("IMAGE", "PROMPT"),
        help="ask PROMPT about IMAGE in the real window, print the (greedy) answer, exit",
    )
    parser.add_argument("--screenshot", type=Path, help="with --smoke: save the window as a PNG")
    parser.add_argument(
        "--max-new-tokens", type=int, help="with --smoke: answer length limit for this run (settings unchanged)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="with --smoke: give up after this many seconds (default 1800)"
    )
    parser.add_argument("--color-scheme", choices=COLOR_SCHEMES, default="system")
    args = parser.parse_args(argv)
    if (args.screenshot or args.max_new_tokens) and not args.smoke:
        parser.error("--screenshot and --max-new-tokens go with --smoke")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ui.app import create_application
    from ui.settings import load_settings, resolve_model_dir

    app = create_application(sys.argv[:1], args.color_scheme)
    model_dir = args.model_dir or resolve_model_dir(load_settings())
    if args.smoke:
        return run_smoke(
            app, model_dir, Path(args.smoke[0]), args.smoke[1], args.screenshot, args.timeout, args.max_new_tokens
        )
    return run_app(app, model_dir, args.images, explicit=args.model_dir is not None)


def run_app(app, model_dir: Path, images: list[Path], explicit: bool) -> int:
    from engine.artifacts import is_valid_artifact_dir

    if not is_valid_artifact_dir(model_dir):
        if explicit:
            print(f"iris: {model_dir} is not an Iris model folder; opening the setup wizard.", file=sys.stderr)
        model_dir = run_wizard(model_dir)
        if model_dir is None:
            return 0  # the user closed the wizard: nothing to open
    return open_main_window(app, model_dir, images)


def run_wizard(model_dir: Path) -> Path | None:
    """The first-run wizard (imported only when needed); the folder it produced, or None."""
    from ui.settings import load_settings, save_settings
    from ui.wizard import SetupWizard

    wizard = SetupWizard(model_dir)
    ready: list[Path] = []
    wizard.modelReady.connect(ready.append)
    wizard.exec()
    if not ready:
        return None
    save_settings(replace(load_settings(), model_dir=str(ready[-1])))
    return ready[-1]


def open_main_window(app, model_dir: Path, images: list[Path]) -> int:
    from ui.app import build_main_window

    window = build_main_window(model_dir)
    if images:
        window.image_pane.add_files(images)
    window.show()
    return app.exec()


def run_smoke(
    app,
    model_dir: Path,
    image: Path,
    prompt: str,
    screenshot: Path | None,
    timeout: float,
    max_new_tokens: int | None = None,
) -> int:
    """One real question in the real window, answered greedily; exit code 0 only if an answer
    streamed in."""
    import tempfile

    problem = _smoke_input_problem(model_dir, image)
    if problem:
        print(f"iris --smoke: {problem}", file=sys.stderr)
        return 2
    # Keep the user's history and settings clean: chats, pasted images and the measured speed
    # of this run all go to a folder that is deleted at the end.
    with tempfile.TemporaryDirectory(prefix="iris-smoke-") as scratch:
        window = _scratch_window(model_dir, Path(scratch), max_new_tokens)
        outcome = _ask_once(app, window, image, prompt, screenshot, timeout)
        window.close()
    if outcome.get("error"):
        print(f"iris --smoke: {outcome['error']}", file=sys.stderr)
        return 1
    if not outcome.get("answer"):
        print("iris --smoke: the model produced no text", file=sys.stderr)
        return 1
    print(outcome["answer"])
    return 0


def _smoke_input_problem(model_dir: Path, image: Path) -> str | None:
    from engine.artifacts import is_valid_artifact_dir

    if not is_valid_artifact_dir(model_dir):
        return f"{model_dir} is not a complete Iris model folder."
    if not image.is_file():
        return f"no such image file: {image}"
    return None


def _scratch_window(model_dir: Path, scratch: Path, max_new_tokens: int | None):
    """The real window, with settings, chats and speeds kept in `scratch`, answering greedily so
    the printed answer is the model's one answer and can be checked."""
    from ui.app import build_main_window
    from ui.settings import use_scratch_settings

    window = build_main_window(
        model_dir,
        settings_store=use_scratch_settings(scratch / "settings"),
        history_root=scratch / "chats",
        attachments_dir=lambda: scratch,
        speed_file=scratch / "speeds.json",
    )
    window.settings = window.settings.greedy()  # this run's copy of the settings only
    if max_new_tokens:
        window.settings = replace(window.settings, max_new_tokens=max_new_tokens)
    return window


def _ask_once(app, window, image: Path, prompt: str, screenshot: Path | None, timeout: float) -> dict[str, str]:
    """Open `image`, ask `prompt` once the model is loaded, and run Qt until the answer ends, the
    question is refused or `timeout` passes: {"answer": ..., "error": ...}."""
    from PySide6.QtCore import QTimer

    outcome: dict[str, str] = {}

    def capture_and_quit() -> None:
        # Before quit(): Qt 6 closes every window on quit, and the shot must show the answer.
        if screenshot is not None and not window.grab().save(str(screenshot)):
            outcome["error"] = outcome.get("error") or f"could not write the screenshot {screenshot}"
        app.quit()

    def finish(answer: str, error: str) -> None:
        if "answer" in outcome:
            return
        outcome.update(answer=answer, error=error)
        QTimer.singleShot(300, capture_and_quit)  # let the last render reach the screen

    window.answerFinished.connect(finish)
    window.session.error.connect(lambda message: finish("", message))  # e.g. the question was refused
    window.modelLoaded.connect(lambda: window.session.send(prompt))
    QTimer.singleShot(int(timeout * 1000), lambda: finish("", f"no answer after {timeout:.0f} s"))
    # A refused image ends the run with its message (the question is not sent without it).
    window.image_pane.errorOccurred.connect(lambda message: finish("", f"{image} was refused: {message}"))
    window.show()
    window.image_pane.add_files([image])  # opened on its own thread; a question sent meanwhile waits for it
    app.exec()
    return outcome


if __name__ == "__main__":
    sys.exit(main())
