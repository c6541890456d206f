"""The web playground in a real headless Chromium against a real server (issue 28).

One browser for the module, the bundled default service, small requests. Each tab is
submitted as a person would (fill the form, click) and the test asserts what a person
would see: streamed text, a forecast band drawn on the canvas, a decoded PNG of the asked
size, audio that began playing while chunks were still arriving; and that the curl command
shown is exactly the request the page sent. A screenshot per tab goes to docs/img/.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from serving import wait_until

from mmntp.generation import Pipeline
from mmntp.serve.server import ServerConfig
from mmntp.serve.thread import ServerThread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/setup.sh installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (the dev extra) is missing"
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "playground-test-key"
# Screenshots for the docs: MMNTP_SCREENSHOTS=docs/img refreshes the committed ones; by
# default they go to a temporary folder so a test run leaves the checkout unchanged.
SHOTS_ENV = "MMNTP_SCREENSHOTS"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def server():
    """The bundled default service with an HTTP port and one API key: every test goes
    through the page's key box as a person with a keyed server would."""
    # Warm: each modality's first request (lazy imports, first shapes) runs before the page.
    config = ServerConfig(port=0, http_port=0, warmup=True)
    with ServerThread(Pipeline.from_pretrained(), config, api_keys=[KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def base_url(server):
    return server.http_url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(browser, base_url, key: str | None):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(base_url + "/")
    page.wait_for_selector("#model-info[data-state]", state="attached")
    if key is not None:
        enter_key(page, key)
    return context, page


def enter_key(page, key: str) -> None:
    """Type the key and leave the box (its change event stores it and lists the models)."""
    set_key(page, key, expect="ready")


def set_key(page, key: str, expect: str) -> None:
    page.evaluate("delete document.querySelector('#model-info').dataset.state")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Tab")
    page.wait_for_selector(f"#model-info[data-state={expect}]", state="attached")


@pytest.fixture
def page(browser, base_url):
    context, page = open_page(browser, base_url, KEY)
    yield page
    context.close()
    assert not page.errors, f"uncaught errors in the page: {page.errors}"


def submit(page, tab: str, fields: dict[str, str]) -> dict:
    """Fill `tab`'s form, submit it, wait for the stream to end; the JSON body it sent."""
    page.get_by_role("tab", name=tab.capitalize()).click()
    panel = page.locator(f"#panel-{tab}")
    for name, value in fields.items():
        panel.locator(f"[name={name}]").fill(value)
    with page.expect_request("**/v1/generate") as sent:
        panel.locator("button[type=submit]").click()
    page.wait_for_function(
        f"['done', 'failed'].includes(document.querySelector('#panel-{tab}').dataset.state)"
    )
    return sent.value.post_data_json


def curl_body(page, tab: str) -> dict:
    """The JSON of the -d argument of the curl command the tab shows (parsed as a shell would)."""
    words = shlex.split(page.locator(f"#panel-{tab} .curl").input_value())
    assert words[:2] == ["curl", "-N"] and words[2].endswith("/v1/generate")
    # the key is a shell variable, never the key itself (a screenshot or a paste leaks nothing)
    assert "Authorization: Bearer $MMNTP_API_KEY" in words and KEY not in " ".join(words)
    return json.loads(words[words.index("-d") + 1])


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get(SHOTS_ENV)
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


def shoot(page, shots: Path, tab: str) -> None:
    """A 1280x800 PNG of the page as it stands (docs/img/playground-<tab>.png)."""
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / f"playground-{tab}.png"
    page.screenshot(path=path)
    # A 256-colour palette keeps a committed screenshot well under 200 KB.
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def assert_done(page, tab: str) -> None:
    panel = page.locator(f"#panel-{tab}")
    assert panel.get_attribute("data-state") == "done", panel.locator(".error").text_content()
    assert "first chunk" in panel.locator(".timing").text_content()


def test_tabs_follow_the_models_the_server_lists(page):
    enabled = {
        name: page.get_by_role("tab", name=name).is_enabled()
        for name in ("Text", "Forecast", "Image", "Audio")
    }
    assert all(enabled.values()), enabled
    motion = page.locator("#tab-motion")
    assert motion.is_disabled()  # the bundled model does not generate motion
    assert "does not generate motion" in motion.text_content()


def test_text_streams_into_the_page(page, shots):
    sent = submit(page, "text", {"prompt": "The ", "max_tokens": "24", "seed": "3"})
    assert_done(page, "text")
    assert sent["prompt"] == [{"text": "The "}]  # as typed: the trailing space is kept
    assert sent["output"] == {"text": {"maxTokens": 24}} and sent["stream"] is True
    assert page.locator("#panel-text .text-output").text_content() != ""
    assert curl_body(page, "text") == sent
    shoot(page, shots, "text")


def test_forecast_draws_history_median_and_band(page, shots):
    """An uploaded CSV (timestamp,value with a header: the README's example series)."""
    page.get_by_role("tab", name="Forecast").click()
    page.get_by_label("Upload CSV").set_input_files(ROOT / "examples" / "elec_equip.csv")
    page.wait_for_function("document.querySelector('[name=csv]').value.startsWith('timestamp')")
    sent = submit(page, "forecast", {"horizon": "24", "num_samples": "20", "seed": "0"})
    assert_done(page, "forecast")
    rows = (ROOT / "examples" / "elec_equip.csv").read_text().splitlines()[1:]
    assert sent["prompt"][0]["timeseries"]["values"] == [float(r.split(",")[1]) for r in rows]
    canvas = page.locator("#panel-forecast .chart")
    assert canvas.get_attribute("data-plotted") == "3"  # history, band, median
    assert canvas.get_attribute("data-steps") == "24"

    # Read back from the canvas: the band's translucent blue fills an area right of the
    # history (the median's opaque line alone would not), and the left part has none.
    def band_pixels(left: float, right: float) -> int:
        return page.evaluate(
            """([left, right]) => {
              const c = document.querySelector('#panel-forecast .chart');
              const w = Math.round(c.width * (right - left));
              const data = c.getContext('2d').getImageData(c.width * left, 0, w, c.height).data;
              let n = 0;
              for (let i = 0; i < data.length; i += 4) {
                const [r, b, a] = [data[i], data[i + 2], data[i + 3]];
                if (a > 40 && a < 100 && b > r + 100) n++;  // rgba(59, 130, 246, 0.25)
              }
              return n;
            }""",
            [left, right],
        )

    assert band_pixels(0.92, 0.99) > 500
    assert band_pixels(0.1, 0.8) == 0
    assert curl_body(page, "forecast") == sent
    shoot(page, shots, "forecast")


def test_forecast_error_names_the_field_inline(page):
    submit(page, "forecast", {"horizon": "500"})
    panel = page.locator("#panel-forecast")
    assert panel.get_attribute("data-state") == "failed"
    assert "output.timeseries.horizon" in panel.locator(".error").text_content()
    assert panel.locator("[name=horizon]").get_attribute("aria-invalid") == "true"


def test_forecast_csv_errors_name_the_line_before_sending(page):
    page.get_by_role("tab", name="Forecast").click()
    panel = page.locator("#panel-forecast")
    panel.locator("[name=csv]").fill("value\n1\n2\nabc\n")
    panel.locator("button[type=submit]").click()
    assert "line 4" in panel.locator(".error").text_content()
    assert panel.locator("[name=csv]").get_attribute("aria-invalid") == "true"


def test_forecast_sends_a_missing_value_as_nan(page):
    """An empty value in timestamp,value is a gap: proto3 JSON's "NaN", which the server
    takes as missing (the forecast still comes), and a break in the history's line."""
    rows = [f"2020-{m:02d},{'' if m == 5 else 10 + m % 3}" for m in range(1, 13)] * 2
    sent = submit(page, "forecast", {"csv": "month,value\n" + "\n".join(rows), "horizon": "3"})
    assert_done(page, "forecast")
    values = sent["prompt"][0]["timeseries"]["values"]
    assert len(values) == 24 and values[4] == values[16] == "NaN" and values[5] == 10 + 6 % 3
    assert page.locator("#panel-forecast .chart").get_attribute("data-steps") == "3"


def test_image_previews_then_a_decoded_png_of_the_asked_size(page, shots):
    sent = submit(page, "image", {"width": "48", "height": "40", "seed": "0"})
    assert_done(page, "image")
    assert sent["output"]["image"] == {"head": "vq", "width": 48, "height": 40}
    assert "numSteps" not in sent["sampling"]  # vq takes no steps
    size = page.evaluate(
        """async () => {
          const img = document.querySelector('#panel-image .image-output');
          await img.decode();
          return [img.naturalWidth, img.naturalHeight, img.dataset.final];
        }"""
    )
    assert size == [48, 40, "true"]
    assert "final image" in page.locator("#panel-image .progress").text_content()
    assert curl_body(page, "image") == sent
    shoot(page, shots, "image")


def test_flow_head_sends_its_steps_and_draws_the_native_size(page):
    page.get_by_role("tab", name="Image").click()
    page.get_by_label("Head").select_option("flow")
    assert page.get_by_label("Steps (flow, diffusion)").is_enabled()
    sent = submit(page, "image", {"steps": "3", "seed": "1"})
    assert_done(page, "image")
    assert sent["sampling"] == {"guidanceScale": 1.5, "numSteps": 3, "seed": 1}
    assert sent["output"]["image"] == {"head": "flow", "width": 0, "height": 0}
    img = page.evaluate(
        """async () => {
          const img = document.querySelector('#panel-image .image-output');
          await img.decode();
          return [img.naturalWidth, img.naturalHeight, Number(img.dataset.chunks)];
        }"""
    )
    assert img[:2] == [32, 32] and img[2] >= 2  # previews, then the final image


def test_audio_plays_before_the_stream_ends(page, shots):
    sent = submit(page, "audio", {"seconds": "1", "seed": "0"})
    assert_done(page, "audio")
    panel = page.locator("#panel-audio")
    first_play = float(panel.get_attribute("data-first-play-at"))
    stream_end = float(panel.get_attribute("data-stream-end-at"))
    assert first_play < stream_end
    assert int(panel.get_attribute("data-chunks-after-play")) >= 1  # more came while playing
    state = page.evaluate(
        "() => new Promise(r => setTimeout(() => r(document.querySelector('#panel-audio .waveform').player.context.state), 100))"
    )
    assert state == "running"
    assert curl_body(page, "audio") == sent
    shoot(page, shots, "audio")


def test_the_sse_reader_survives_any_split_of_the_stream(page):
    """Events read one byte at a time (a UTF-8 character and CRLFs split across reads),
    a keep-alive comment skipped, and `event: error` raised as the API's error."""
    result = page.evaluate(
        """async () => {
          const { readEvents } = await import('/playground/api.js');
          const text = ': keep-alive\\r\\n\\r\\n'
            + 'data: {"text": {"delta": "é😀"}}\\r\\n\\r\\n'
            + 'data: {"final": {"finishReason": "FINISH_REASON_STOP"}}\\n\\n'
            + 'event: error\\ndata: {"error": {"code": "INVALID_ARGUMENT", "status": 400,'
            + ' "message": "m", "field": "output.text.max_tokens"}}\\n\\n';
          const bytes = new TextEncoder().encode(text);
          const stream = new ReadableStream({
            start(controller) {
              for (const b of bytes) controller.enqueue(new Uint8Array([b]));
              controller.close();
            },
          });
          const messages = [];
          try {
            for await (const m of readEvents(stream)) messages.push(m);
          } catch (e) {
            return { messages, error: [e.constructor.name, e.httpStatus, e.grpcStatus, e.field] };
          }
          return { messages, error: null };
        }"""
    )
    assert result["messages"] == [
        {"text": {"delta": "é😀"}},
        {"final": {"finishReason": "FINISH_REASON_STOP"}},
    ]
    assert result["error"] == ["ApiError", 400, "INVALID_ARGUMENT", "output.text.max_tokens"]


def test_humanml3d_vectors_integrate_the_root(page):
    """263-feature frames: root height as given, xz velocity integrated, the root-frame
    joints turned by the inverse of the root's yaw (HumanML3D's recover_from_ric)."""
    joints = page.evaluate(
        """async () => {
          const { framesToJoints } = await import('/playground/media.js');
          const frame = (yawVel, vx) => {
            const v = new Array(263).fill(0);
            [v[0], v[1], v[3]] = [yawVel, vx, 0.9];
            [v[4], v[5], v[6]] = [1, 0.5, 0];  // joint 1, in the root's frame
            return v;
          };
          const frames = framesToJoints([...frame(Math.PI / 4, 0.1), ...frame(0, 0)], 263);
          return frames.map((f) => [f[0], f[1]].map((p) => p.map((x) => Math.round(x * 1e6) / 1e6)));
        }"""
    )
    assert joints[0] == [[0, 0.9, 0], [1, 0.5, 0]]
    # After a quarter-pi half-angle yaw, the frame has turned by pi/2: x goes to z.
    assert joints[1] == [[0.1, 0.9, 0], [0.1, 0.5, 1]]


def pose(t: float) -> list[float]:
    """22 SMPL joints [x, y, z] of a figure stepping right, arms swinging (66 values)."""
    swing = 0.15 * math.sin(t)
    rest = {
        0: (0, 1.0), 1: (0.1, 0.9), 2: (-0.1, 0.9), 3: (0, 1.1), 4: (0.1 + swing, 0.5),
        5: (-0.1 - swing, 0.5), 6: (0, 1.25), 7: (0.1 + swing, 0.1), 8: (-0.1 - swing, 0.1),
        9: (0, 1.35), 10: (0.15 + swing, 0.0), 11: (-0.05 - swing, 0.0), 12: (0, 1.5),
        13: (0.1, 1.45), 14: (-0.1, 1.45), 15: (0, 1.65), 16: (0.2, 1.4), 17: (-0.2, 1.4),
        18: (0.25 - swing, 1.15), 19: (-0.25 + swing, 1.15), 20: (0.3 - swing, 0.9),
        21: (-0.3 + swing, 0.9),
    }  # fmt: skip
    return [v for j in range(22) for v in (rest[j][0] + 0.02 * t, rest[j][1], 0.0)]


def test_motion_tab_animates_a_stick_figure_when_a_model_lists_motion(page, base_url):
    """The bundled model has no motion, so this test answers the page's two requests itself
    (Playwright routes) with a ListModels and a motion stream in the proto's own JSON."""
    from google.protobuf import json_format

    from mmntp.v1 import generation_pb2 as pb

    models = pb.ListModelsResponse(
        models=[pb.ModelInfo(name="walker", output_modalities=[pb.MODALITY_MOTION])]
    )
    frames = [pose(t) for t in range(40)]
    events = [
        pb.GenerateResponse(
            motion=pb.MotionChunk(first_frame=k, num_features=66, values=frames[k] + frames[k + 1])
        )
        for k in range(0, 40, 2)
    ] + [pb.GenerateResponse(final=pb.Final(finish_reason=pb.FINISH_REASON_LENGTH))]
    sse = "".join(f"data: {json_format.MessageToJson(e, indent=None)}\n\n" for e in events)
    page.route("**/v1/models", lambda r: r.fulfill(json=json_format.MessageToDict(models)))
    page.route("**/v1/generate", lambda r: r.fulfill(body=sse, content_type="text/event-stream"))
    page.reload()
    page.wait_for_selector("#model-info[data-state=ready]", state="attached")
    assert page.locator("#tab-motion").is_enabled()
    assert page.locator("#tab-text").is_disabled()  # walker makes no text
    sent = submit(page, "motion", {"frames": "40"})
    assert_done(page, "motion")
    assert sent["output"] == {"motion": {"frames": 40}}
    page.wait_for_function(
        "document.querySelector('#panel-motion .figure').dataset.frames === '40'"
    )
    drawn = page.evaluate(
        """() => {
          const c = document.querySelector('#panel-motion .figure');
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < data.length; i += 4) n += data[i] > 0;
          return n;
        }"""
    )
    assert drawn > 200  # five limbs of 3 px lines


def test_the_key_box_unlocks_a_keyed_server_and_is_remembered(browser, base_url):
    context, page = open_page(browser, base_url, key=None)
    try:
        assert page.locator("#model-info").get_attribute("data-state") == "locked"
        assert "API key" in page.locator("#model-info").text_content()
        enter_key(page, KEY)
        assert page.get_by_role("tab", name="Forecast").is_enabled()
        page.reload()  # the key comes back from localStorage
        page.wait_for_function(
            "document.querySelector('#model-info').textContent.startsWith('Model')"
        )
        assert page.get_by_label("API key").input_value() == KEY
    finally:
        context.close()


def test_a_wrong_key_is_refused_inline(page):
    set_key(page, "not-the-key", expect="locked")
    submit(page, "text", {"max_tokens": "4"})
    panel = page.locator("#panel-text")
    assert panel.get_attribute("data-state") == "failed"
    error = panel.locator(".error")
    assert error.is_visible() and "UNAUTHENTICATED" in error.text_content()
    assert "not-the-key" not in error.text_content()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_copied_curl_command_streams_the_same_text(page):
    """Paste the shown command into a shell (with the key in $MMNTP_API_KEY): its SSE
    stream carries the same seeded text the page showed."""
    # a single quote in the prompt: the command's shell quoting must carry it
    sent = submit(page, "text", {"prompt": "It's ", "max_tokens": "16", "seed": "7"})
    assert_done(page, "text")
    shown = page.locator("#panel-text .text-output").text_content()
    command = page.locator("#panel-text .curl").input_value()
    env = {**os.environ, "MMNTP_API_KEY": KEY}
    out = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    messages = [json.loads(line[5:]) for line in out.splitlines() if line.startswith("data:")]
    assert curl_body(page, "text")["prompt"] == sent["prompt"] == [{"text": "It's "}]
    assert "final" in messages[-1]
    assert "".join(m["text"]["delta"] for m in messages if "text" in m) == shown


def test_stop_ends_the_stream_and_the_server_request(page, server, monkeypatch):
    def cancelled() -> float:
        labels = {"modality": "text", "status": "CANCELLED"}
        return server.server.metrics.registry.get_sample_value("mmntp_requests_total", labels) or 0

    runner = server.pipe.engine.runner
    execute = runner.execute

    def paced(plan):  # steps of 20 ms at least: 512 tokens surely outlast the click on Stop
        time.sleep(0.02)
        return execute(plan)

    monkeypatch.setattr(runner, "execute", paced)
    before, usage = cancelled(), server.pipe.engine.kv.usage
    panel = page.locator("#panel-text")
    page.get_by_role("tab", name="Text").click()
    panel.locator("[name=max_tokens]").fill("512")
    panel.locator("button[type=submit]").click()
    page.wait_for_function("document.querySelector('#panel-text .text-output').textContent !== ''")
    panel.locator(".stop").click()
    page.wait_for_function("document.querySelector('#panel-text').dataset.state !== 'running'")
    assert panel.get_attribute("data-state") == "stopped"
    assert "stopped" in panel.locator(".timing").text_content()
    assert panel.locator(".error").is_hidden()  # stopping is not an error
    assert panel.locator(".stop").is_disabled() and panel.locator("[type=submit]").is_enabled()
    # Closing the fetch is a disconnect: the server ends the call and frees its cache.
    wait_until(lambda: cancelled() == before + 1, timeout=30, what="the call recorded CANCELLED")
    wait_until(lambda: server.pipe.engine.kv.usage == usage, timeout=30, what="the cache freed")
