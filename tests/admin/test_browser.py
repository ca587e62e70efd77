"""The operator console in a real browser: Debian's headless Chromium driven by Playwright, against the real
stack (gunicorn on the test database, the django-q2 task cluster, a fake-engine worker). An operator logs in,
creates an API key and uses it with the OpenAI SDK, watches a running batch's progress bar move, cancels it,
and opens the output file's preview. Screenshots of the overview, the batch list and a batch page (light and
dark) are saved to test-artifacts/.

The tests of this module run in order and share one browser page, as one operator's session would."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pytest
from openai import OpenAI

from tests.stack import ROOT, start_web, start_worker, wait_for

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
USERNAME, PASSWORD = "console-operator", "console-operator-pw-4711"
FAKE = "fake-echo"


def chat(custom_id: str, max_tokens: int) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": FAKE,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"count to {max_tokens} <b>&amp;</b>"}],
        },
    }


def jsonl(lines: list) -> bytes:
    return b"".join((json.dumps(line).encode() if isinstance(line, dict) else line) + b"\n" for line in lines)


# ------------------------------------------------------------------------------------------------ the stack
@pytest.fixture(scope="module")
def console(stack_env, task_cluster):
    """The web server for the browser, started after `collectstatic` so that its static files (hashed by the
    manifest storage, served by WhiteNoise) exist when it boots."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=stack_env, check=True
    )
    proc, url = start_web("admin-console", stack_env)
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def operator(django_db_blocker):
    """A staff superuser, written to the test database the server reads."""
    from django.contrib.auth import get_user_model

    with django_db_blocker.unblock():
        User = get_user_model()
        User.objects.filter(username=USERNAME).delete()
        User.objects.create_superuser(USERNAME, "ops@example.invalid", PASSWORD)
    return USERNAME


@pytest.fixture(scope="module")
def worker(stack_env, task_cluster):
    proc = start_worker(stack_env, "admin-browser", [FAKE])
    yield proc
    if proc.alive():
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "the browser tests drive Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(console, operator, browser):  # the database work first: none once Playwright runs its loop
    context = browser.new_context(base_url=console, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of cancel/retry buttons
    yield page
    context.close()


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def batch_page(batch_id: str) -> str:
    from django.contrib.admin.utils import quote  # admin URLs escape "_" (in every batch id) their own way

    return f"/admin/batches_api/batch/{quote(batch_id)}/change/"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# ------------------------------------------------------------------------------------------------ the tests
def test_operator_logs_in(page, console):
    page.goto("/admin/batches_api/batch/")
    assert "/admin/login/" in page.url  # anonymous: the login page
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/batches_api/batch/")
    assert page.locator("#result_list, .paginator").count() >= 1


def test_create_api_key_and_use_it_with_the_sdk(page, console, worker, state):
    page.goto("/admin/batchserver/apikey/add/")
    page.fill("#id_name", "browser-key")
    page.fill("#id_new_project", "browser-team")
    page.click("input[name=_save]")
    page.wait_for_selector("#bs-new-key")
    raw_key = page.input_value("#bs-new-key")
    assert raw_key.startswith("sk-bs-") and len(raw_key) > 30
    page.click("[data-bs-copy]")
    page.wait_for_selector("#bs-new-key-copied", state="visible")
    assert page.evaluate("navigator.clipboard.readText()") == raw_key

    # Never shown again: not in the source of the key list nor of the key's own page.
    page.goto("/admin/batchserver/apikey/")
    assert raw_key not in page.content() and raw_key[:12] in page.content()
    page.click("text=browser-key")
    page.wait_for_selector("#bs-revoke")
    assert raw_key not in page.content()

    sdk = OpenAI(base_url=f"{console}/v1", api_key=raw_key, max_retries=0, timeout=60)
    assert any(model.id == FAKE for model in sdk.models.list())
    # A quick batch that completes, one that fails validation, and the long one the operator will watch.
    quick = sdk.batches.create(
        input_file_id=sdk.files.create(
            file=("quick.jsonl", io.BytesIO(jsonl([chat(f"q{i}", 20 + i) for i in range(5)]))), purpose="batch"
        ).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly-eval"},
    )
    bad = sdk.batches.create(
        input_file_id=sdk.files.create(
            file=("bad.jsonl", io.BytesIO(jsonl([chat("ok", 5), b"{not json", chat("ok", 5)]))), purpose="batch"
        ).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    steps = [150, 300, 600, 1000, 1500, 2000, 3000, 4000, 8000, 8000, 8000, 8000]  # 0.3 s … 16 s each
    long_lines = [chat(f"slow-{i}-{n}", n) for i, n in enumerate(steps)]
    long_file = sdk.files.create(file=("long.jsonl", io.BytesIO(jsonl(long_lines))), purpose="batch")
    wait_for(lambda: sdk.batches.retrieve(quick.id).status == "completed", 60, 0.2, "the quick batch")
    assert wait_for(lambda: sdk.batches.retrieve(bad.id).status == "failed" or None, 30, 0.2, "the bad batch")
    long = sdk.batches.create(
        input_file_id=long_file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "summaries", "owner": "data-team"},
    )
    wait_for(lambda: sdk.batches.retrieve(long.id).status == "in_progress", 30, 0.1, "the long batch to start")
    state.update(sdk=sdk, raw_key=raw_key, quick=quick.id, bad=bad.id, long=long.id)


def test_batch_list_shows_the_running_batch_and_refreshes(page, state):
    long = state["long"]
    page.goto("/admin/batches_api/batch/?model=fake-echo")
    row = page.locator(f"#result_list tr:has(span.bs-id[title='{long}'])")
    assert row.locator(".bs-status-in_progress").count() == 1
    page.evaluate("window.__notReloaded = true")
    before = row.locator("[role=progressbar]").get_attribute("aria-valuenow")
    wait_for(
        lambda: row.locator("[role=progressbar]").get_attribute("aria-valuenow") != before,
        20,
        0.25,
        "the list's progress cell to move",
    )
    assert page.evaluate("window.__notReloaded") is True  # updated in place, filters and query kept
    assert page.url.endswith("?model=fake-echo")
    shot(page, "admin-batch-list.png")


def test_watch_progress_then_cancel(page, state):
    long = state["long"]
    page.goto(batch_page(long))
    bar = page.locator("[data-live=progress] [role=progressbar]")
    page.evaluate("window.__notReloaded = true")
    first = int(bar.get_attribute("aria-valuenow"))
    total = int(bar.get_attribute("aria-valuemax"))
    assert total == 12 and first < total
    moved = wait_for(
        lambda: (v := int(bar.get_attribute("aria-valuenow"))) > first and v, 20, 0.25, "the progress bar to move"
    )
    assert page.evaluate("window.__notReloaded") is True
    assert moved < total, "the batch finished before it could be cancelled"
    assert page.locator("[data-live=status] .bs-status-in_progress").count() == 1
    shot(page, "admin-batch-running.png")

    with page.expect_navigation():
        page.click("#bs-cancel")  # confirm() accepted by the page's dialog handler; POST, then redirect back
    assert page.url.endswith(batch_page(long))
    assert page.locator(".messagelist").inner_text().strip().startswith(f"Batch {long} is")
    status = page.locator("[data-live=status] .bs-badge")
    wait_for(lambda: status.inner_text().strip() == "Cancelled", 30, 0.25, "the batch to show as cancelled")
    assert state["sdk"].batches.retrieve(long).status == "cancelled"
    page.wait_for_function("document.documentElement.dataset.bsLive === 'done'")  # the page stopped polling
    state["cancelled_page"] = page.url


def test_output_file_preview(page, state):
    long = state["long"]
    page.goto(batch_page(long))
    page.locator("[data-live=files] tr:has(th:text-is('Output')) a:text-is('view')").click()
    page.wait_for_selector("#bs-preview")
    preview = page.locator("#bs-preview")
    first = json.loads(preview.locator("pre").first.inner_text())
    assert first["custom_id"] == "slow-0-150" and first["response"]["status_code"] == 200
    assert "\n  " in preview.locator("pre").first.inner_text()  # pretty-printed
    assert page.locator("#bs-download").get_attribute("href").endswith("/download/")
    shot(page, "admin-file-preview.png")
    # The error file has the requests the cancel stopped.
    page.goto(batch_page(long))
    page.locator("[data-live=files] tr:has(th:text-is('Errors')) a:text-is('view')").click()
    assert "batch_cancelled" in page.locator("#bs-preview").inner_text()


def test_screenshots_of_overview_and_pages(page, browser, console, state):
    page.goto("/admin/")
    assert page.locator("#bs-overview").count() == 1
    assert page.locator("#bs-overview svg.bs-chart rect.bs-bar").count() == 60
    shot(page, "admin-overview.png")
    page.goto(batch_page(state["bad"]))
    assert page.locator("table.bs-errors").count() == 1
    shot(page, "admin-batch-failed.png")
    page.goto(batch_page(state["long"]))
    shot(page, "admin-batch-cancelled.png")
    page.goto("/admin/batches_api/worker/")
    assert page.locator(".bs-state-alive").count() >= 1
    shot(page, "admin-workers.png")

    dark = browser.new_context(
        base_url=console,
        viewport={"width": 1440, "height": 900},
        color_scheme="dark",
        storage_state=page.context.storage_state(),
    )
    dark_page = dark.new_page()
    for path, name in (
        ("/admin/batches_api/batch/", "admin-batch-list-dark.png"),
        ("/admin/", "admin-overview-dark.png"),
        (batch_page(state["long"]), "admin-batch-dark.png"),
    ):
        dark_page.goto(path)
        shot(dark_page, name)
    dark.close()
