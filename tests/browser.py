"""Headless Chromium (Debian's /usr/bin/chromium through Playwright) with a face as its fake camera."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"


def chromium_missing() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (Debian package chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def write_y4m(path: Path, image: np.ndarray, frames: int = 30, fps: int = 30) -> Path:
    """A YUV4MPEG2 clip of `image` (RGB, even size) repeated `frames` times: Chromium's fake camera file."""
    height, width = image.shape[:2]
    i420 = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes()
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(b"FRAME\n")
            handle.write(i420)
    return path


def camera_image(face: np.ndarray, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """`face` centred on a grey 640x480 canvas, scaled to fit its height."""
    width, height = size
    canvas = np.full((height, width, 3), 90, dtype=np.uint8)
    scale = height / face.shape[0]
    resized = cv2.resize(face, (int(face.shape[1] * scale) // 2 * 2, height), interpolation=cv2.INTER_AREA)
    left = (width - resized.shape[1]) // 2
    canvas[:, left : left + resized.shape[1]] = resized
    return canvas


def chromium_args(fake_camera: Path | None) -> list[str]:
    """Headless flags; with `fake_camera`, the webcam shows that Y4M file and needs no permission prompt."""
    camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={fake_camera}",
    ]
    return [
        "--no-sandbox",
        "--disable-gpu",
        *(camera if fake_camera is not None else []),
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


@asynccontextmanager
async def open_browser(fake_camera: Path | None = None) -> AsyncIterator[Browser]:
    """A fresh headless Chromium, its webcam showing `fake_camera` if given; it closes on leaving."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args(fake_camera))
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(url: str, fake_camera: Path | None = None) -> AsyncIterator[Page]:
    """`url` in a fresh headless Chromium (see `open_browser`); the browser closes on leaving."""
    async with open_browser(fake_camera) as browser:
        page = await browser.new_page()
        await page.goto(url)
        yield page


def camera_element(camera_id: str) -> str:
    """The CSS selector of a camera's entry in the page's camera list."""
    return f'.camera[data-id="{camera_id}"]'


async def watch_camera(page: Page, camera_id: str, timeout: float) -> None:
    """Wait up to `timeout` s until the page lists the camera as live, then press its Watch button."""
    element = camera_element(camera_id)
    await page.wait_for_function(
        f"document.querySelector('{element} .status')?.textContent === 'live'", timeout=timeout * 1000
    )
    await page.click(f"{element} .watch")
