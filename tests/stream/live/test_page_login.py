"""The sign-in form of a real `fakeweb serve` with a token, in headless Chromium: a wrong token is refused with
a message that does not repeat it, the right one opens the page. And the page's icon, served to anyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium_missing, open_browser
from server_process import ServerProcess, raw_request

TOKEN = "tok-Login-0123456789"
WRONG = "wrong-Login-9876543210"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ICON_SIZE = """async () => {
    const icon = new Image();
    icon.src = "/favicon.ico";
    await icon.decode();
    return [icon.naturalWidth, icon.naturalHeight];
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("login"), env={"FAKEWEB_TOKEN": TOKEN}) as process:
        yield process


async def _sign_in(server: ServerProcess) -> dict[str, Any]:
    """Open a protected page, sign in with a wrong token, then with the right one; what each step showed."""
    async with open_browser() as browser:
        page = await browser.new_page()
        await page.goto(server.url + "/")
        steps: dict[str, Any] = {"redirected to": page.url, "icon": await page.evaluate(ICON_SIZE)}
        await page.fill("input[name=token]", WRONG)
        async with page.expect_navigation() as wrong:
            await page.click("button[type=submit]")
        steps["wrong"] = {
            "status": (await wrong.value).status,
            "message": await page.text_content("#message"),
            "input": await page.input_value("input[name=token]"),
            "html": await page.content(),
        }
        await page.fill("input[name=token]", TOKEN)
        async with page.expect_navigation(url=server.url + "/"):
            await page.click("button[type=submit]")
        steps["signed in"] = {"url": page.url, "start button": await page.is_visible("#start")}
        return steps


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_a_wrong_token_is_refused_with_a_message_and_the_right_one_opens_the_page(
    server: ServerProcess,
) -> None:
    steps = asyncio.run(_sign_in(server))
    assert steps["redirected to"] == server.url + "/login"
    wrong = steps["wrong"]
    assert wrong["status"] == 401
    assert wrong["message"] == "Wrong token: check it and try again."
    assert wrong["input"] == "" and WRONG not in wrong["html"], "the token sent is not shown back"
    assert steps["signed in"] == {"url": server.url + "/", "start button": True}
    assert steps["icon"] == [32, 32], "the browser shows the icon before signing in"


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (FORM, b"", 401, "No token was sent: type the access token."),
        (FORM, b"other=1", 401, "No token was sent: type the access token."),
        (FORM, f"token={WRONG}".encode(), 401, "Wrong token: check it and try again."),
        (
            {"Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"},
            f"token={TOKEN}".encode(),
            400,
            "The form could not be read (a malformed body or an unknown charset).",
        ),
    ],
    ids=["empty", "no token field", "wrong", "unknown charset"],
)
def test_refused_sign_ins_say_why(
    server: ServerProcess, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    answer = raw_request(server, "POST", "/login", headers, body)
    assert answer[0] == status and "Set-Cookie" not in answer[1]
    assert f'<p id="message" role="alert">{message}</p>' in answer[2]
    assert WRONG not in answer[2] and TOKEN not in answer[2]


def test_the_sign_in_form_alone_shows_no_message(server: ServerProcess) -> None:
    status, _, text = raw_request(server, "GET", "/login")
    assert status == 200 and '<p id="message" role="alert"></p>' in text


def test_the_icon_is_public_and_cacheable(server: ServerProcess) -> None:
    status, headers, text = raw_request(server, "GET", "/favicon.ico")
    assert status == 200
    assert headers["Content-Type"].startswith("image/svg+xml")
    assert headers["Cache-Control"] == "public, max-age=604800"
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
