"""The coordinator's dashboard in a real browser, against a real coordinator and a real
worker: log in, create a worker (its token shown once) and start it with that token, submit
a job from the form and watch its log and its loss chart grow, cancel one, drain the
worker; another tenant's jobs never show. Forms without the session's CSRF token, or from
another origin, are refused."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from browser import shoot
from harness_e2e import Fleet, free_port, wait_until

TRAIN = """\
import json, time
for step in range(1, 16):
    print("corral.metric " + json.dumps({"step": step, "loss": round(1.0 / step, 4)}), flush=True)
    print(f"epoch {step} done", flush=True)
    time.sleep(0.4)
"""


def tenant(fleet: Fleet, name: str) -> dict[str, Any]:
    with fleet.api() as api:
        r = api.post("/api/admin/tenants", json={"name": name})
        assert r.status_code == 201, r.text
        return dict(r.json())


def test_a_tenant_admin_runs_the_fleet_from_the_dashboard(
    fleet: Fleet,
    browser: Any,
    tmp_path: Path,
) -> None:
    fleet.start_server()
    a, b = tenant(fleet, "team-a"), tenant(fleet, "team-b")
    job = {"command": ["true"], "name": "their-secret", "worker_labels": {"pool": "none"}}
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {b['api_key']}"}) as h:
        theirs = h.post("/api/queue/submit", json=job).json()
    script = tmp_path / "train.py"
    script.write_text(TRAIN)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(fleet.url + "/")
    assert "/ui/login" in page.url
    shoot(page, "login")
    page.fill("input[name=key]", "ck_not_a_key_at_all")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text()  # refused, said
    page.fill("input[name=key]", a["api_key"])
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/jobs")

    # A worker from the fleet page: the token once, then a real worker started with it.
    page.click("text=Fleet")
    page.click("summary:has-text('Create a worker')")
    page.fill("#create input[name=name]", "gpu-box-1")
    page.fill("#create input[name=labels]", "pool=a")
    page.click("#create button[type=submit]")
    token = page.locator("#token").inner_text().strip()
    assert token.startswith("wt_")
    worker = fleet.start_worker("gpu-box-1", token=token, heartbeat=0.5)
    page.goto(fleet.url + "/ui/fleet")
    row = page.locator("tr[data-worker='gpu-box-1']")
    row.locator(".status.idle").wait_for(timeout=30_000)  # the table follows on its own

    # A job from the form; its page follows the log and draws the loss as it comes.
    page.click("text=Queue and jobs")
    page.click("summary:has-text('Submit a job')")
    page.fill("#submit input[name=command]", f"{sys.executable} {script}")
    page.fill("#submit input[name=name]", "train-mlp")
    page.fill("#submit input[name=labels]", "pool=a")
    page.click("#submit button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("#log:has-text('epoch 3 done')").wait_for(timeout=30_000)
    chart = page.locator(".chart[data-series='loss']")
    chart.wait_for(timeout=15_000)
    first = int(chart.get_attribute("data-points") or 0)
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) > first, 15,
               "the loss chart to grow")  # fmt: skip
    page.locator("#log:has-text('epoch 15 done')").wait_for(timeout=30_000)
    page.locator("#history .state.succeeded").first.wait_for(timeout=15_000)
    page.reload()
    assert page.locator("#job-state").inner_text() == "succeeded"
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) == 15, 10, "all points")
    shoot(page, "job")

    # Cancel one from its page.
    page.goto(fleet.url + "/ui/jobs")
    page.click("summary:has-text('Submit a job')")
    page.fill("#submit input[name=command]", "sleep 120")
    page.fill("#submit input[name=labels]", "pool=a")
    page.click("#submit button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/jobs/job_\w+$"))
    sleeper = page.url.rsplit("/", 1)[1]
    wait_until(lambda: _state(fleet, a["api_key"], sleeper) == "running", 30, "it to run")
    page.click("button:has-text('Cancel')")
    wait_until(lambda: _state(fleet, a["api_key"], sleeper) == "cancelled", 30, "the cancel")

    # The queue shows this tenant's jobs, never the other's.
    page.goto(fleet.url + "/ui/jobs")
    assert page.locator(f"tr[data-job='{job_id}']").count() == 1
    assert page.locator(f"tr[data-job='{sleeper}']").count() == 1
    assert theirs["id"] not in page.content() and "their-secret" not in page.content()
    page.goto(fleet.url + f"/ui/jobs/{theirs['id']}")
    assert page.locator("h1").inner_text() == "not found"
    page.goto(fleet.url + "/ui/jobs")
    shoot(page, "jobs")
    page.select_option("select[name=state]", "succeeded")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**state=succeeded**")
    assert page.locator(f"tr[data-job='{job_id}']").count() == 1
    assert page.locator(f"tr[data-job='{sleeper}']").count() == 0

    # Retry the cancelled one: a new job with its request, which its history says.
    page.goto(fleet.url + "/ui/jobs?state=cancelled")
    page.locator(f"tr[data-job='{sleeper}'] button:has-text('Retry')").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/job_\w+$"))
    again = page.url.rsplit("/", 1)[1]
    assert again != sleeper and page.locator("h1").inner_text().startswith("sleep")
    page.locator(f"#history td:has-text('a retry of {sleeper}')").wait_for(timeout=10_000)
    page.click("button:has-text('Cancel')")
    wait_until(lambda: _state(fleet, a["api_key"], again) == "cancelled", 30, "its cancel")

    # Drain the worker: it takes no new work (a persistent worker stays, drained).
    page.goto(fleet.url + "/ui/fleet")
    shoot(page, "fleet")
    row.locator("button:has-text('Drain')").click()
    row.locator(".status.draining").wait_for(timeout=15_000)
    assert fleet.workers().get("gpu-box-1") is None  # the harness's key is another tenant's
    assert worker.alive()

    page.goto(fleet.url + "/ui/audit?action=worker.*")
    assert page.locator("td:has-text('worker.draining')").count() >= 1
    shoot(page, "audit")


def _state(fleet: Fleet, key: str, job_id: str) -> str:
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {key}"}) as h:
        return str(h.get(f"/api/jobs/{job_id}").json()["state"])


def test_a_form_without_its_csrf_token_or_from_elsewhere_is_refused(fleet: Fleet) -> None:
    fleet.start_server()
    a = tenant(fleet, "team-a")
    with httpx.Client(base_url=fleet.url, follow_redirects=False) as h:
        r = h.post("/ui/login", data={"key": a["api_key"]}, headers={"Origin": fleet.url})
        assert r.status_code == 303 and "corral_session" in r.cookies
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        jobs = h.get("/ui/jobs")
        csrf = re.search(r'name="csrf" value="(\w+)"', jobs.text)[1]  # type: ignore[index]
        form = {"command": "true", "labels": "pool=a"}
        # No token, a wrong one, and the right one from another site: each 403, no job.
        assert h.post("/ui/jobs", data=form).status_code == 403
        assert h.post("/ui/jobs", data={**form, "csrf": "0" * 64}).status_code == 403
        evil = {"Origin": "http://evil.example"}
        assert h.post("/ui/jobs", data={**form, "csrf": csrf}, headers=evil).status_code == 403
        login_elsewhere = h.post("/ui/login", data={"key": a["api_key"]}, headers=evil)
        assert login_elsewhere.status_code == 403
        assert "job_" not in h.get("/ui/jobs").text
        made = h.post("/ui/jobs", data={**form, "csrf": csrf}, headers={"Origin": fleet.url})
        assert made.status_code == 303 and "/ui/jobs/job_" in made.headers["location"]
        # Every page carries a policy that refuses scripts from elsewhere and framing.
        assert "script-src 'self'" in jobs.headers["content-security-policy"]
        assert jobs.headers["x-frame-options"] == "DENY"
        # Logging out ends the session for the browser.
        out = h.post("/ui/logout", data={"csrf": csrf}, headers={"Origin": fleet.url})
        assert out.status_code == 303
        h.cookies.clear()
        assert "/ui/login" in h.get("/ui/jobs").headers["location"]


def test_a_viewer_sees_jobs_but_no_fleet_and_no_forms(fleet: Fleet) -> None:
    fleet.start_server()
    a = tenant(fleet, "team-a")
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {a['api_key']}"}) as h:
        r = h.post("/api/admin/keys", json={"name": "ro", "role": "viewer"})
        assert r.status_code == 201, r.text
        viewer_key = r.json()["key"]
    with httpx.Client(base_url=fleet.url, follow_redirects=False) as h:
        assert h.post("/ui/login", data={"key": viewer_key}).status_code == 303
        jobs = h.get("/ui/jobs")
        assert jobs.status_code == 200 and "Submit a job" not in jobs.text
        assert "/ui/fleet" not in jobs.text
        assert h.get("/ui/fleet").status_code == 403
        csrf = re.search(r'name="csrf" value="(\w+)"', jobs.text)[1]  # type: ignore[index]
        assert h.post("/ui/jobs", data={"command": "true", "csrf": csrf}).status_code == 403


def test_the_worker_page_pauses_and_resumes_its_worker_in_a_browser(
    fleet: Fleet, browser: Any
) -> None:
    fleet.start_server()
    port = free_port()
    fleet.start_worker("desk", CORRAL_WORKER__UI="true", CORRAL_WORKER__UI_PORT=str(port))
    page = browser.new_page()
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/"), 30, "the worker's page")
    page.goto(f"http://127.0.0.1:{port}/")
    page.locator("#status:has-text('idle')").wait_for(timeout=30_000)
    assert page.locator("#worker-id").inner_text().startswith("w_")
    assert "wt_" not in page.content()  # no secret on the page
    shoot(page, "worker-page")
    page.click("#pause")
    page.locator("#status:has-text('paused')").wait_for(timeout=15_000)
    wait_until(lambda: fleet.workers()["desk"]["paused"], 10, "the coordinator to agree")
    held = fleet.submit(["true"])
    time.sleep(1.5)
    assert fleet.job(held["id"])["state"] == "queued"  # a paused worker takes nothing
    page.click("#resume")
    page.locator("#status:has-text('idle'), #status:has-text('busy')").wait_for(timeout=15_000)
    fleet.wait_state(held["id"], {"succeeded"}, 30)
    assert not fleet.workers()["desk"]["paused"]
    # Its admin's pause shows on its page too (its next heartbeat says so), and its resume.
    wid = fleet.workers()["desk"]["id"]
    with fleet.api() as api:
        assert api.post(f"/api/admin/workers/{wid}/pause").status_code == 200
        page.locator("#status:has-text('paused')").wait_for(timeout=15_000)
        assert api.post(f"/api/admin/workers/{wid}/resume").status_code == 200
        page.locator("#status:has-text('idle')").wait_for(timeout=15_000)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
