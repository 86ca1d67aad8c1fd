"""The dashboard in headless Chromium, reached through a loopback forward of admin.sock."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.integration import server as srv
from tests.polling import PATIENCE

pytestmark = pytest.mark.browser

ID = "id"
CSS = "css selector"


def text(b: Browser, element_id: str) -> str:
    return str(b.driver.find_element(ID, element_id).text)


def number(s: str) -> float:
    """The number a KPI tile shows ("1,234", "12.5 ms")."""
    m = re.search(r"-?[\d,]+(\.\d+)?", s)
    assert m, f"no number in {s!r}"
    return float(m.group(0).replace(",", ""))


def type_into(b: Browser, element_id: str, value: str) -> None:
    el = b.driver.find_element(ID, element_id)
    el.clear()
    el.send_keys(value)


# How far the page scrolls sideways, and the innermost elements that stick out.
WIDER_THAN_VIEWPORT = """
const root = document.documentElement, w = root.clientWidth;
const clipped = (e) => {
  for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
    if (getComputedStyle(p).overflowX !== "visible") return true;
  }
  return false;
};
const out = [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > w + 1 && !clipped(e))
  .filter((e) => ![...e.children].some((c) => c.getBoundingClientRect().right > w + 1))
  .slice(0, 8)
  .map((e) => `${e.tagName}#${e.id}.${e.className} ${e.getBoundingClientRect().right}`);
return [root.scrollWidth - w, out];
"""


def visible(element_id: str) -> Any:
    return lambda d: d.find_element(ID, element_id).is_displayed()


# The page's fetch wrapped so that it reads each JSON-RPC reply as EDIT leaves it: JavaScript
# statements on `body` (the parsed reply) and `given` (the script's arguments); `return resp`
# passes a reply on as it came.
REWRITE_RPC_REPLIES = """
const given = [...arguments];
const real = window.fetch;
window.fetch = async (...args) => {
  const resp = await real(...args);
  if (String(args[0]) !== "/rpc") return resp;
  const body = await resp.clone().json();
  EDIT
  return new Response(JSON.stringify(body), {status: resp.status, headers: resp.headers});
};
"""


def rewrite_rpc_replies(b: Browser, edit: str, *given: object) -> None:
    """What the starter service here cannot be made to say (downloads under way, failures, a
    long queue), shown from its real replies rewritten in the page."""
    b.driver.execute_script(REWRITE_RPC_REPLIES.replace("EDIT", edit), *given)


def test_page_loads_and_status_reaches_ok(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    assert d.title.startswith("hero_embedder_provider")
    assert text(b, "state-badge") == "ok"
    rows = d.find_elements(CSS, "#models-body tr")
    assert len(rows) == 5  # the starter catalog: four levels and the cosine reranker
    assert {r.get_attribute("data-state") for r in rows} == {"ready"}
    assert "384" in rows[0].text and "Q1" in rows[0].text
    runs_on = [r.find_element(CSS, "td.runtime").text for r in rows]
    assert all(re.fullmatch(r"(onnxruntime|openvino) · (fp32|bf16|int8)", t) for t in runs_on)
    assert text(b, "kpi-ready") == "5 / 5", text(b, "kpi-ready")
    assert re.match(r"\d+\.\d+", text(b, "kpi-ort"))
    procs = d.find_elements(CSS, "#mem-table tbody tr")
    assert [p.find_element(CSS, "td").text for p in procs] == ["master", "worker", "worker"]
    assert "All model files are on disk" in text(b, "downloads")
    # the providers the sessions use, not every one the onnxruntime wheel has compiled in
    b.wait(lambda d: "Providers" in text(b, "runtime"), message="no runtime facts")
    assert "Providers\nCPUExecutionProvider\n" in text(b, "runtime")
    assert not b.console_errors()
    b.screenshot("status-light")


def test_status_shows_download_progress(dashboard: Browser) -> None:
    """While files download, status().downloads has byte counts: the panel draws bars. The
    starter files are all built here, so the next status replies are rewritten in the page."""
    b, d = dashboard, dashboard.driver
    rewrite_rpc_replies(
        b,
        """
        for (const r of Array.isArray(body) ? body : []) {
          const st = r.result;
          if (!st || !st.downloads) continue;
          st.models[0].state = "downloading";
          st.downloads[st.models[0].id] = {
            model: st.models[0].id, state: "downloading", bytes_done: 45e6, bytes_total: 90e6,
            files: [
              {model: st.models[0].id, name: "model.onnx", state: "downloading",
               bytes_done: 40e6, bytes_total: 80e6},
              {model: st.models[0].id, name: "tokenizer.json", state: "pending",
               bytes_done: 0, bytes_total: null},
            ],
          };
        }
        """,
    )
    b.wait(lambda d: d.find_elements(CSS, "#downloads .dl progress"), message="no download bars")
    bars = d.find_elements(CSS, "#downloads .dl progress")
    assert len(bars) == 3  # the model's total, then its two unfinished files
    assert float(bars[0].get_attribute("value")) / float(bars[0].get_attribute("max")) == 0.5
    assert "50%" in text(b, "downloads") and "model.onnx" in text(b, "downloads")
    b.screenshot("status-downloading")


def test_each_models_queue_is_shown(dashboard: Browser) -> None:
    """The answering worker's queue per model: 0 at rest for the micro-batched models, none
    of its own for the cosine scorer; a queue from a rewritten reply, with its seconds."""
    b, d = dashboard, dashboard.driver
    # Read in one script: the table is drawn again at every refresh, so elements found
    # before may be gone by the time their text is asked for.
    read = (
        "return [...document.querySelectorAll('#models-body td.queued')]"
        ".map(c => [c.innerText, c.dataset.texts || null])"
    )
    assert [t for t, _ in d.execute_script(read)] == ["0", "0", "0", "0", "—"]
    rewrite_rpc_replies(
        b,
        """
        for (const r of Array.isArray(body) ? body : []) {
          const st = r.result;
          if (st && st.downloads) st.models[0].queue = {texts: 4096, seconds: 12.5};
        }
        """,
    )
    b.wait(lambda d: d.execute_script(read)[0][0] != "0", message="no queue shown")
    assert d.execute_script(read)[0] == ["4,096 · ~12.5 s", "4096"]
    assert "Queued is the queue of the worker that answered" in text(b, "counters-note")


def test_a_shared_download_failure_is_shown_once(dashboard: Browser) -> None:
    """Five models failing for one cause (no Hub) showed its ~450 characters ten times; the
    cause now comes once under `failures`, each model's error refers to it. The replies are
    rewritten in the page (the starter files are all on disk here)."""
    b, d = dashboard, dashboard.driver
    cause = "the Hub could not be reached (ConnectError). Without the Hub: `make run`"
    rewrite_rpc_replies(
        b,
        """
        const [cause] = given;
        if (!Array.isArray(body) || !body[1] || !body[1].result || !body[1].result.downloads) {
          return resp;
        }
        const [health, status] = [body[0].result, body[1].result];
        for (const h of [health, status]) {
          h.status = "degraded";
          h.models_ready = false;
          h.failures = {download: cause};
          h.retry_in = 30;
          h.errors = {};
        }
        for (const m of status.models.slice(0, 2)) {
          m.state = "error";
          const ref = "(why, and what to do: failures.download)";
          m.error = `model '${m.id}' is missing model.onnx ${ref}`;
          health.errors[m.id] = m.error;
        }
        status.errors = health.errors;
        """,
        cause,
    )
    b.wait(lambda _: "failures.download:" in text(b, "health-errors"), message="no failures")
    page = str(d.execute_script("return document.body.innerText"))
    assert page.count(cause) == 1, page
    assert "retried in 30s" in text(b, "health-errors")
    assert text(b, "health-errors").count("(why, and what to do: failures.download)") == 2


def test_embed_playground_vectors_and_similarity_map(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply today."]
    type_into(b, "embed-texts", "\n".join(texts))
    d.find_element(ID, "embed-submit").click()
    b.wait(visible("embed-result"), message="no embed result")
    meta = text(b, "embed-meta")
    assert "Dims\n384" in meta.replace(" ", "\n") or "384" in meta
    # Q2 of the starter catalog is an INT8 model: the person reads its precision, not the
    # float32 the playground asks for on the wire (shown apart).
    assert "int8" in meta and "float32" in meta and "Latency" in meta
    rows = d.find_elements(CSS, "#embed-vectors tbody tr")
    assert len(rows) == 3
    first = rows[0].find_element(CSS, "td.vals").text
    assert len(re.findall(r"-?\d\.\d{4}", first)) == 6
    cells = d.find_elements(CSS, "#embed-heatmap svg rect.cell")
    assert len(cells) == 9
    values = [float(c.get_attribute("data-value")) for c in cells]
    assert all(abs(values[i * 3 + i] - 1) < 1e-3 for i in range(3))
    # the two sentences about cats are closer to each other than to the one about stocks
    assert values[1] > values[2] and values[1] > values[5]
    b.screenshot("embed-light")


def test_rerank_ranks_the_relevant_document_first(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    type_into(b, "rerank-query", "What is the capital of France?")
    docs = [
        "Bananas are rich in potassium.",
        "The stock market closed higher on Friday.",
        "Paris is the capital and largest city of France.",
        "Photosynthesis turns light into chemical energy.",
    ]
    type_into(b, "rerank-docs", "\n".join(docs))
    d.find_element(ID, "rerank-submit").click()
    b.wait(visible("rerank-result"), message="no rerank result")
    items = d.find_elements(CSS, "#rerank-list li")
    assert len(items) == 4
    assert "Paris" in items[0].find_element(CSS, ".doc").text
    assert items[0].get_attribute("data-index") == "2"
    scores = [float(i.get_attribute("data-score")) for i in items]
    assert scores == sorted(scores, reverse=True)
    widths = [i.find_element(CSS, ".fill").size["width"] for i in items]
    assert widths[0] > widths[-1] > 0
    assert "cosine" in text(b, "rerank-meta") and text(b, "rerank-note")


def test_unknown_model_shows_the_rpc_error(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    type_into(b, "embed-custom", "no-such-model")
    d.find_element(ID, "embed-submit").click()
    b.wait(visible("embed-error"), message="no error shown")
    shown = text(b, "embed-error")
    assert "-32002" in shown and "unknown model" in shown and "no-such-model" in shown
    assert not d.find_element(ID, "embed-result").is_displayed()
    b.screenshot("embed-error")


def test_benchmark_runs_and_draws_its_charts(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    from selenium.webdriver.support.ui import Select

    Select(d.find_element(ID, "bench-model")).select_by_value("q:1")
    for element_id, value in (
        ("bench-batch", "8"),
        ("bench-concurrency", "4"),
        ("bench-duration", "3"),
        ("bench-words", "12"),
    ):
        type_into(b, element_id, value)
    t0 = time.monotonic()
    d.find_element(ID, "bench-start").click()
    assert not d.find_element(ID, "bench-stop").get_attribute("disabled")
    b.wait(
        lambda d: text(b, "bench-live").startswith("done"), timeout=PATIENCE, message="never done"
    )
    took = time.monotonic() - t0
    assert took > 2.9, f"a 3 s benchmark was done after {took:.1f} s"
    for kpi in ("bench-texts-s", "bench-tokens-s", "bench-req-s", "bench-p50", "bench-p99"):
        assert number(text(b, kpi)) > 0, kpi
    assert number(text(b, "bench-p50")) <= number(text(b, "bench-p99"))
    assert "(0 errors)" in text(b, "bench-summary")
    assert len(d.find_elements(CSS, "#bench-histogram svg rect.bar")) > 0
    assert len(d.find_elements(CSS, "#bench-histogram svg line.mark")) == 3
    line = d.find_element(CSS, "#bench-timeline svg path.line").get_attribute("d")
    assert line and line.count("L") >= 3
    assert not d.find_element(ID, "bench-error").is_displayed()
    b.screenshot("benchmark-light")


def test_benchmark_bounds_are_enforced(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    type_into(b, "bench-duration", "61")
    d.find_element(ID, "bench-start").click()
    b.wait(visible("bench-error"), message="no error for a 61 s run")
    assert "Duration must be a whole number from 1 to 60" in text(b, "bench-error")
    type_into(b, "bench-duration", "2")
    type_into(b, "bench-concurrency", "33")
    d.find_element(ID, "bench-start").click()
    b.wait(lambda d: "Concurrency" in text(b, "bench-error"), message="no concurrency error")
    assert not d.find_element(ID, "bench-result").is_displayed()


# Each model picker's width against the width it needs to show its longest option whole.
PICKER_WIDTHS = """
return ["embed-model", "bench-model", "rerank-model"].map((id) => {
  const s = document.getElementById(id);
  const probe = s.cloneNode(true);
  Object.assign(probe.style, {width: "max-content", maxWidth: "none", position: "absolute"});
  s.parentElement.appendChild(probe);
  const need = probe.getBoundingClientRect().width;
  probe.remove();
  return [id, s.getBoundingClientRect().width, need];
});
"""


@pytest.mark.parametrize("window", [1280, 1000, 800, 600, 420])
def test_model_pickers_show_whole_names(dashboard: Browser, window: int) -> None:
    """The level picker's "Q3 · all-minilm-l6-v2-int8-stored (fp32, 384d)" was cut off."""
    dashboard.driver.set_window_size(window, 900)
    for element_id, width, need in dashboard.driver.execute_script(PICKER_WIDTHS):
        assert width >= need - 0.5, f"{element_id} is {width:.0f}px wide, its names need {need:.0f}"


def test_dark_mode_and_narrow_width(dashboard: Browser) -> None:
    b, d = dashboard, dashboard.driver
    type_into(b, "embed-texts", "red apple\ngreen apple\nblue whale\nocean")
    d.find_element(ID, "embed-submit").click()
    d.find_element(ID, "rerank-submit").click()
    b.wait(visible("embed-result"))
    b.wait(visible("rerank-result"))
    b.color_scheme("dark")
    background = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    rgb = [int(x) for x in re.findall(r"\d+", background)[:3]]
    assert sum(rgb) < 120, background
    b.screenshot("dashboard-dark")
    d.set_window_size(420, 900)
    overflow, culprits = d.execute_script(WIDER_THAN_VIEWPORT)
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px at 420px: {culprits}"
    b.screenshot("dashboard-narrow-dark")
    b.color_scheme("light")
    b.screenshot("dashboard-narrow-light")


def test_csp_blocks_inline_script_and_console_errors_are_caught(browser: Browser) -> None:
    """The CSP holds in the browser (an injected inline script does not run), and the console
    check of the other tests does see errors: the refusal is logged as one."""
    b, d = browser, browser.driver
    b.open("/")
    b.console()  # drain
    ran = d.execute_script(
        """
        const s = document.createElement("script");
        s.textContent = "window.__inlineRan = true;";
        document.head.append(s);
        return window.__inlineRan === true;
        """
    )
    assert ran is False
    errors = b.wait(lambda _: b.console_errors(), message="no CSP violation logged")
    assert any("Content Security Policy" in e["message"] for e in errors), errors


def test_plain_tcp_does_not_serve_the_page(browser: Browser, admin_server: srv.Server) -> None:
    b, d = browser, browser.driver
    d.get(f"http://127.0.0.1:{admin_server.port}/")
    assert "is not served on this listener (tcp)" in d.find_element(CSS, "body").text
    assert "EMBEDDER_TCP_EXPOSE=admin" in d.find_element(CSS, "body").text
    assert any("404" in e["message"] for e in b.console_errors())
