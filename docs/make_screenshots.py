"""The README's screenshots of the operator console, taken from a whole stack serving the default models.

A fresh PostgreSQL database, gunicorn, the task cluster and one inference worker serving the two models `make run`
serves (SmolLM2-135M-Instruct for chat, all-MiniLM-L6-v2 for embeddings; var/models, `manage.py prepare_models`).
Two projects send real work through the OpenAI SDK: completed chat batches of mixed lengths, an embeddings batch,
a batch that fails validation, a cancelled one, and one large chat batch each that is still running when the pages
are shot, so that the progress bars and the overview's figures are live. Debian's Chromium, driven by Playwright,
logs in as a staff superuser and saves the pages to docs/screenshots/ (1440 x 900). Everything started is stopped
at the end, and the database and data folder are removed.

Usage: .venv/bin/python docs/make_screenshots.py   (a few minutes: two model loads, then the batches)
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack import ADMIN_DATABASE_URL, Stack, start_worker, wait_for  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
STACK = "analytics"  # the stack's own project; the second one is "search"
CHAT = "SmolLM2-135M-Instruct"
EMBED = "all-MiniLM-L6-v2"
USERNAME, PASSWORD = "operator", "operator-screenshots-pw-4711"
VIEWPORT = {"width": 1440, "height": 900}
MAX_PNG_BYTES = 400_000  # a longer full page is shot as the viewport only
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"]

TOPICS = [
    "solar panels",
    "a bakery in Lisbon",
    "the history of the bicycle",
    "learning to play the cello",
    "container shipping",
    "urban beekeeping",
    "a mountain hut in winter",
    "recycling old phones",
    "the night sky in August",
    "a small public library",
    "electric ferries",
    "sourdough bread",
]
TASKS = [
    "Write a short product description for {}.",
    "Summarize in three sentences what a newcomer should know about {}.",
    "Write a friendly newsletter paragraph about {}.",
    "List five questions a curious child might ask about {}.",
    "Explain {} to a colleague in plain words.",
]
QUESTIONS = [
    "Where is my order?",
    "Can I change the delivery address after paying?",
    "How do I reset my password?",
    "Do you ship to Norway?",
    "My invoice shows the wrong company name.",
    "Can I return a gift without the receipt?",
]
SENTENCES = [
    "The invoice is attached to the confirmation email.",
    "Orders above fifty euros ship for free.",
    "Our support team answers within one working day.",
    "The warehouse is closed on public holidays.",
    "Passwords can be reset from the sign-in page.",
    "Gift cards never expire.",
    "Returns are accepted within thirty days.",
    "The mobile app works offline for saved lists.",
]


def chat(custom_id: str, prompt: str, max_tokens: int, **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": CHAT, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}], **body},
    }


def prompts(n: int, max_tokens: list[int], prefix: str) -> list[dict]:
    return [
        chat(
            f"{prefix}-{i}",
            TASKS[i % len(TASKS)].format(TOPICS[(i // len(TASKS) + i) % len(TOPICS)]),
            max_tokens[i % len(max_tokens)],
        )
        for i in range(n)
    ]


def embedding(custom_id: str, text: str) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": text}}


def submit(client, name: str, lines: list[dict], endpoint: str = "/v1/chat/completions", **metadata: str):
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    file = client.files.create(file=(f"{name}.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(
        input_file_id=file.id, endpoint=endpoint, completion_window="24h", metadata={"job": name, **metadata}
    )


def wait_status(client, batch_id: str, statuses: set[str], timeout: float):
    return wait_for(
        lambda: (batch := client.batches.retrieve(batch_id)).status in statuses and batch,
        timeout,
        1,
        f"batch {batch_id} to be {' or '.join(sorted(statuses))}",
    )


def manage(stack: Stack, *args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**stack.env, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def batch_page(batch_id: str) -> str:
    return f"/admin/batches_api/batch/{batch_id.replace('_', '_5F')}/change/"  # the admin's own quoting of "_"


def shot(page, name: str) -> None:
    path = OUT / name
    page.screenshot(path=str(path), full_page=True)
    if path.stat().st_size > MAX_PNG_BYTES:
        page.screenshot(path=str(path))
    print(f"{name}: {path.stat().st_size // 1024} KB")


def run_work(stack: Stack, analytics, search) -> dict:
    """The finished work of both projects, then the two large batches left running. Returns the batch ids."""
    ids = {}
    # Finished work: chat batches of mixed lengths, embeddings, a typo in one line's url.
    finished = [
        (analytics, submit(analytics, "nightly-eval", prompts(10, [16, 24, 32], "eval"), owner="ml-team")),
        (analytics, submit(analytics, "support-replies", [
            chat(f"ticket-{i}", f"Write a short, friendly reply to a customer who asks: {q}", 96)
            for i, q in enumerate(QUESTIONS * 4)
        ])),
        (analytics, submit(analytics, "product-copy", prompts(36, [128, 192, 256], "copy"), owner="marketing")),
        (search, submit(search, "query-rewrites", prompts(16, [32, 48], "rewrite"))),
        (search, submit(search, "doc-embeddings", [
            embedding(f"doc-{i}", f"{SENTENCES[i % len(SENTENCES)]} (section {i // len(SENTENCES) + 1})")
            for i in range(320)
        ], "/v1/embeddings")),
    ]  # fmt: skip
    typo = prompts(3, [32], "typo")
    typo[1]["url"] = "/v1/chat/completion"
    failed = submit(analytics, "weekly-report", typo)
    ids["failed"] = wait_status(analytics, failed.id, {"failed"}, 300).id
    for client, batch in finished:
        done = wait_status(client, batch.id, {"completed", "failed", "cancelled", "expired"}, 1800)
        assert done.status == "completed", done
        print(f"{batch.metadata['job']}: completed, {done.request_counts}")
    ids["completed"] = finished[1][1].id  # support-replies: its output file is previewed

    # Cancelled part way.
    reindex = submit(search, "reindex-summaries", prompts(60, [200, 256], "reindex"))
    wait_for(lambda: search.batches.retrieve(reindex.id).request_counts.completed >= 5, 900, 1, "the batch to cancel")
    search.batches.cancel(reindex.id)
    wait_status(search, reindex.id, {"cancelled"}, 300)

    # Still running when the pages are shot: one large batch per project.
    ids["running"] = submit(
        analytics, "weekly-digest", prompts(1500, [64, 128, 192, 256, 384], "digest"), owner="data-team"
    ).id
    ids["running_search"] = submit(search, "catalog-summaries", prompts(600, [96, 160, 256], "catalog")).id
    for client, batch_id in ((analytics, ids["running"]), (search, ids["running_search"])):
        wait_for(
            lambda c=client, b=batch_id: c.batches.retrieve(b).request_counts.completed >= 20,
            900,
            2,
            f"batch {batch_id} to make progress",
        )
    return ids


def take_screenshots(url: str, ids: dict) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=url, viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")

        page.wait_for_selector("#bs-overview")
        shot(page, "admin-overview.png")
        page.goto("/admin/batches_api/batch/")
        shot(page, "admin-batch-list.png")
        page.goto(batch_page(ids["running"]))
        shot(page, "admin-batch-running.png")
        page.goto(batch_page(ids["completed"]))
        page.locator("[data-live=files] tr:has(th:text-is('Output')) a:text-is('view')").click()
        page.wait_for_selector("#bs-preview")
        shot(page, "admin-file-preview.png")
        page.goto("/admin/batches_api/worker/")
        shot(page, "admin-workers.png")
        page.goto("/admin/batches_api/usageday/")
        shot(page, "admin-usage.png")

        dark = browser.new_context(
            base_url=url, viewport=VIEWPORT, color_scheme="dark", storage_state=context.storage_state()
        )
        dark_page = dark.new_page()
        dark_page.goto(batch_page(ids["running_search"]))
        shot(dark_page, "admin-batch-dark.png")
        dark.close()
        context.close()
        browser.close()


def main() -> None:
    data_dir = ROOT / "var" / STACK
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.monotonic()
    try:
        # An empty BATCHSERVER_MODELS_FILE: the settings' default models, as `make run` serves them.
        with Stack(STACK, extra_env={"BATCHSERVER_MODELS_FILE": ""}) as stack:
            manage(stack, "collectstatic", "--noinput", "-v0")  # WhiteNoise serves the hashed files gunicorn finds
            manage(
                stack,
                "createsuperuser",
                "--noinput",
                DJANGO_SUPERUSER_USERNAME=USERNAME,
                DJANGO_SUPERUSER_PASSWORD=PASSWORD,
                DJANGO_SUPERUSER_EMAIL="ops@example.invalid",
            )
            search_key = manage(stack, "apikey", "create", "--name", "search-app", "--new-project", "search")
            url = stack.start_server()
            # Fewer requests in the engine at once than the default, so that they end steadily while pages are shot.
            stack.procs.append(
                start_worker(stack.env, "worker-1", [CHAT, EMBED], {"BATCHSERVER_WORKER_MAX_INFLIGHT": "64"})
            )
            analytics = stack.client()
            search = analytics.with_options(api_key=search_key)
            ids = run_work(stack, analytics, search)
            print(f"work done in {time.monotonic() - started:.0f} s; shooting the pages")
            take_screenshots(url, ids)
    finally:
        import psycopg

        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "batchserver_{STACK}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
