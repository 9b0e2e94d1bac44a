"""The pack in ComfyUI's real web frontend: a ComfyUI server on a free loopback port, opened in
headless Chromium through Playwright.

Every shipped workflow is loaded through the page as the template browser loads it
(`app.loadGraphData`): no missing-node or error dialog, no page error, the graph the page would
queue (`app.graphToPrompt()`) is the one the workflow tests run, and the view the workflow opens
with shows its note. One demo workflow is queued from the page: progress, previews and the saved
image reach the page. Freshly added NFSD nodes keep their seeds (web/seeds.js), so a NeRF graph of
fresh nodes, cancelled and queued again, resumes. Screenshots go to outputs/browser/ (ignored by
git) for review.

Needs COMFYUI_PATH, the `playwright` package and a Chromium (CHROMIUM, else `chromium` on PATH);
Playwright's own browser download is never used. Skips, with its reason, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from comfyui_helpers import COMFYUI_PATH, PACK_FOLDER, REPO, TINY_NERF, comfy_runtime, requires_comfyui
from comfyui_workflow import ui_to_api

pytestmark = requires_comfyui
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 720}  # a small laptop window: a workflow framed here is framed on larger ones
SCREENSHOTS = REPO / "outputs" / "browser"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
QUEUED = REPO / "workflows" / "demo_nfsd_text_to_image.json"
QUEUED_STEPS, PREVIEW_EVERY = 40, 10  # PREVIEW_EVERY: as the workflow sets it
UI_ONLY = {"Note", "MarkdownNote"}
GROUP_TITLE_WIDTH = 300  # canvas units of a group's title bar that must be on screen (its title is on the left)
SERVER_START_S, PAGE_LOAD_MS, RUN_MS = 120, 60_000, 240_000

if not CHROMIUM:
    pytest.skip("no Chromium found (install Debian's chromium, or set CHROMIUM to its executable)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/system_stats", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"ComfyUI did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def object_info() -> dict:
    """/object_info of the in-process ComfyUI, taken before Playwright runs its event loop."""
    return comfy_runtime().object_info()


@pytest.fixture(scope="module")
def server(object_info):
    """A ComfyUI server on the integration suite's base directory (this pack and the tiny models in
    custom_nodes and models); yields its URL and stops it afterwards."""
    runtime = comfy_runtime()
    user = runtime.base / "user" / "default"
    user.mkdir(parents=True, exist_ok=True)
    # A first start opens the template browser over the canvas; a user who has seen it once does not.
    (user / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    port = free_port()
    log = runtime.base / "server.log"
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
               str(runtime.base), "--disable-api-nodes", "--use-pytorch-cross-attention"]
    # Nothing written under COMFYUI_PATH; one thread, as for the in-process suite: on a busy CPU two
    # OpenMP threads waiting for each other made the demo tens of times slower.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=COMFYUI_PATH, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
                                          timeout=PAGE_LOAD_MS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """One ComfyUI tab, recording page errors and console errors."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.set_default_timeout(PAGE_LOAD_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", self.on_page_error)
        self.page.on("console", self.on_console)
        self.page.on("response", self.on_response)
        self.page.goto(url, timeout=PAGE_LOAD_MS)
        self.page.wait_for_function("() => window.app?.graph && window.app.canvas && window.app.vueAppReady",
                                    timeout=PAGE_LOAD_MS)
        self.startup_errors = list(self.errors)

    def on_page_error(self, error) -> None:
        # Frontend 1.27.10 itself throws this while registering its settings, with no custom node installed.
        if "addSetting" not in (error.stack or ""):
            self.errors.append(f"page error: {error}\n{error.stack}")

    def on_response(self, response) -> None:
        # The frontend asks for the user's own files (user.css, saved workflows, comfy.templates.json); a new
        # user has none.
        path = urllib.parse.urlsplit(response.url).path
        if response.status >= 400 and not (response.status == 404 and (path.startswith("/api/userdata")
                                                                          or path == "/user.css")):
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def on_console(self, message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):  # has its URL above
            self.errors.append(f"console error: {message.text}")

    def evaluate(self, script: str, argument=None):
        return self.page.evaluate(script, argument)

    def dialogs(self) -> list[str]:
        """The text of every open dialog (missing nodes, errors, ...)."""
        return self.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(dialog => dialog.innerText)")

    def load(self, workflow: dict) -> None:
        """As the template browser opens a workflow; then one frame drawn."""
        self.evaluate("async workflow => { await window.app.loadGraphData(workflow); }", workflow)
        self.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")

    def prompt(self, object_info: dict) -> dict:
        """What the page would queue (graphToPrompt's API-format output) as the server reads it: without
        the UI-only titles, and without the values of widgets the frontend adds to some nodes (e.g.
        PreviewAny's text box), which are no inputs of the node and which the server ignores."""
        output = self.evaluate("async () => (await window.app.graphToPrompt()).output")
        prompt = {}
        for node_id, node in output.items():
            spec = object_info[node["class_type"]]["input"]
            declared = {**spec.get("required", {}), **spec.get("optional", {})}
            prompt[node_id] = {"class_type": node["class_type"],
                               "inputs": {name: value for name, value in node["inputs"].items() if name in declared}}
        return prompt

    def boxes(self) -> dict:
        """Screen boxes [left, top, right, bottom] of the notes (title bar included), of the start of
        each group's title bar (where its title is written), and of the free part of the canvas:
        inside the canvas element and below the top menu bar."""
        return self.evaluate("""() => {
            const canvas = window.app.canvas, rect = canvas.canvas.getBoundingClientRect();
            const title = window.LiteGraph.NODE_TITLE_HEIGHT;
            const box = (x, y, width, height) => {
                const [left, top] = canvas.ds.convertOffsetToCanvas([x, y]);
                const [right, bottom] = canvas.ds.convertOffsetToCanvas([x + width, y + height]);
                return [rect.left + left, rect.top + top, rect.left + right, rect.top + bottom];
            };
            // The top menu bar and the workflow tabs lie over the canvas: the free part starts below them.
            let top = rect.top;
            while (top < rect.bottom && document.elementFromPoint(rect.left + 20, top) !== canvas.canvas) top += 1;
            return {
                notes: window.app.graph._nodes.filter(node => %s.includes(node.type)).map(
                    node => box(node.pos[0], node.pos[1] - title, node.size[0], node.size[1] + title)),
                group_titles: window.app.graph._groups.map(group => box(
                    group._bounding[0], group._bounding[1], Math.min(group._bounding[2], %d), title)),
                free: [rect.left, top, rect.right, rect.bottom],
            };
        }""" % (json.dumps(sorted(UI_ONLY)), GROUP_TITLE_WIDTH))

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def inside(box, area) -> bool:
    return area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]


@pytest.fixture(scope="module")
def page(server, browser):
    tab = Page(browser, server)
    yield tab
    tab.page.close()


def test_the_page_starts_with_the_packs_nodes_and_no_error(page, object_info):
    assert page.startup_errors == []
    registered = page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    assert {node_id for node_id in object_info if node_id.startswith("NFSD_")} <= set(registered)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_loads_in_the_frontend_as_the_tests_run_it(page, object_info, path: Path):
    workflow = json.loads(path.read_text())
    page.errors.clear()
    page.load(workflow)
    shot = page.screenshot(path.stem)
    assert page.dialogs() == [], f"a dialog opened on loading {path.name} (see {shot})"
    assert page.errors == [], f"errors on loading {path.name}: {page.errors}"
    assert page.prompt(object_info) == ui_to_api(workflow, object_info)
    boxes = page.boxes()
    assert boxes["notes"], "every workflow explains itself in a note"
    for box in boxes["notes"] + boxes["group_titles"]:
        assert inside(box, boxes["free"]), (
            f"{path.name} opens with a note or group title outside the view: {box} not in {boxes['free']} (see {shot})")


def test_the_templates_sidebar_lists_every_workflow_with_its_thumbnail(page):
    """README's path: the Templates button of the sidebar, then the pack's folder under Custom Nodes."""
    page.errors.clear()
    page.page.locator(".templates-tab-button").click()
    dialog = page.page.locator(".p-dialog")
    dialog.get_by_text(PACK_FOLDER, exact=True).click()
    dialog.get_by_text(WORKFLOWS[0].stem, exact=True).first.wait_for()
    # The dialog shows the first cards and adds more as its list is scrolled to the end.
    unlisted = [path.stem for path in WORKFLOWS]
    for _ in range(len(WORKFLOWS)):
        unlisted = [stem for stem in unlisted if dialog.get_by_text(stem, exact=True).count() == 0]
        if not unlisted:
            break
        page.evaluate("""() => document.querySelectorAll('.p-dialog *').forEach(element => {
            if (element.scrollHeight > element.clientHeight + 1) element.scrollTop = element.scrollHeight; })""")
        page.page.wait_for_timeout(500)
    assert not unlisted, f"the template browser does not list {unlisted}"
    # The cards load their thumbnails as they scroll into view: the first ones are drawn, all are served.
    page.page.wait_for_function("() => [...document.querySelectorAll('.p-dialog img')].some("
                                "image => image.complete && image.naturalWidth > 0)", timeout=PAGE_LOAD_MS)
    served = page.evaluate("""async ([folder, names]) => Promise.all(names.map(async name => {
        const response = await fetch(`/api/workflow_templates/${folder}/${name}.jpg`);
        return [name, response.status, response.headers.get('content-type')];
    }))""", [PACK_FOLDER, [path.stem for path in WORKFLOWS]])
    assert all(status == 200 and kind == "image/jpeg" for name, status, kind in served), served
    page.screenshot("template_browser")
    page.page.keyboard.press("Escape")
    page.page.wait_for_function("() => document.querySelectorAll('.p-dialog').length === 0", timeout=PAGE_LOAD_MS)
    assert page.errors == [], page.errors


def test_a_demo_runs_from_the_page_with_progress_previews_and_its_image(page):
    """Queued from the page (with fewer steps, typed into the Optimizer's widget): the Optimizer's
    progress and previews arrive over the websocket, and the saved image is shown on Save Image."""
    workflow = json.loads(QUEUED.read_text())
    page.errors.clear()
    page.load(workflow)
    optimizer = next(node["id"] for node in workflow["nodes"] if node["type"] == "NFSD_Optimizer")
    page.evaluate("""([node, steps]) => {
        window.app.graph.getNodeById(node).widgets.find(widget => widget.name === 'steps').value = steps;
    }""", [optimizer, QUEUED_STEPS])
    page.evaluate("""() => {
        window.nfsdEvents = {progress: [], previews: 0, executed: [], done: false, failed: null};
        const api = window.app.api, events = window.nfsdEvents;
        api.addEventListener('progress', event => events.progress.push(event.detail));
        for (const name of ['b_preview', 'b_preview_with_metadata'])
            api.addEventListener(name, () => { events.previews += 1; });
        api.addEventListener('executed', event => events.executed.push(event.detail));
        api.addEventListener('execution_success', () => { events.done = true; });
        api.addEventListener('execution_error', event => { events.failed = event.detail.exception_message; });
    }""")
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.page.wait_for_function("() => window.nfsdEvents.done || window.nfsdEvents.failed", timeout=RUN_MS)
    events = page.evaluate("() => window.nfsdEvents")
    assert events["failed"] is None, events["failed"]
    progress = [event["value"] for event in events["progress"] if event["node"] == str(optimizer)]
    assert progress and progress[-1] == QUEUED_STEPS and progress == sorted(progress)
    assert events["previews"] >= QUEUED_STEPS // PREVIEW_EVERY
    saver = next(node for node in workflow["nodes"] if node["type"] == "SaveImage")
    saved = next(event["output"]["images"][0] for event in events["executed"] if event["node"] == str(saver["id"]))
    page.evaluate("""(node) => {  // nodes off screen are not drawn, and load their images when drawn
        window.app.canvas.centerOnNode(window.app.graph.getNodeById(node));
        window.app.canvas.setDirty(true, true);
    }""", saver["id"])
    page.page.wait_for_function(
        """([node, name]) => (window.app.graph.getNodeById(node).imgs ?? [])
               .some(image => image.complete && image.naturalWidth > 0 && image.src.includes(name))""",
        arg=[saver["id"], saved["filename"]], timeout=PAGE_LOAD_MS)
    page.screenshot(f"{QUEUED.stem}_after_run")
    assert page.dialogs() == []
    assert page.errors == [], page.errors


SEEDED_NODES = ["NFSD_Optimizer", "NFSD_NeRFRepresentation", "NFSD_LatentCanvas", "NFSD_ScoreDecomposition"]


def seed_controls(page, node_types: list[str]) -> dict:
    """{node type: the value of its seed's control after generate} for fresh nodes of `node_types` added to an
    empty graph, as a user adds them from the node menu."""
    return page.evaluate("""types => {
        window.app.graph.clear();
        return Object.fromEntries(types.map(type => {
            const node = window.LiteGraph.createNode(type);
            window.app.graph.add(node);
            const seed = node.widgets.find(widget => widget.name === 'seed' || widget.name === 'noise_seed');
            return [type, seed.linkedWidgets[0].value];
        }));
    }""", node_types)


def test_fresh_nfsd_nodes_keep_their_seed_and_saved_workflows_keep_their_control(page):
    """web/seeds.js: a freshly added NFSD node's seed is 'fixed' (other packs' nodes keep the frontend's
    'randomize'), queueing leaves it as it was, and a loaded workflow keeps the control values it saved."""
    page.errors.clear()
    assert seed_controls(page, SEEDED_NODES + ["KSampler"]) == {**dict.fromkeys(SEEDED_NODES, "fixed"),
                                                                "KSampler": "randomize"}
    seeds = page.evaluate("""() => window.app.graph._nodes.map(node => {
        const seed = node.widgets.find(widget => widget.name === 'seed' || widget.name === 'noise_seed');
        seed.value = 7;
        seed.linkedWidgets[0].afterQueued?.();  // what the frontend runs on each node after a queue
        return [node.type, seed.value];
    })""")
    assert {kind: seed for kind, seed in seeds if kind.startswith("NFSD_")} == dict.fromkeys(SEEDED_NODES, 7)
    assert dict(seeds)["KSampler"] != 7  # randomized: the check above could fail
    workflow = json.loads((REPO / "workflows" / "demo_nfsd_text_to_image.json").read_text())
    optimizer = next(node for node in workflow["nodes"] if node["type"] == "NFSD_Optimizer")
    optimizer["widgets_values"][optimizer["widgets_values"].index("fixed")] = "randomize"
    page.load(workflow)
    loaded = page.evaluate("""id => window.app.graph.getNodeById(id).widgets.find(widget => widget.name === 'seed')
        .linkedWidgets[0].value""", optimizer["id"])
    assert loaded == "randomize"
    assert page.errors == [], page.errors


RESUMED_STEPS = 30


def test_a_nerf_of_fresh_nodes_queued_again_resumes_where_it_was_cancelled(page):
    """README's resume, from the page: a NeRF graph of freshly added nodes (the demo model's shapes prior, a
    NeRF sized for a test) is queued, cancelled after its second step and queued again unchanged: the second
    run goes on from where the first stopped."""
    page.errors.clear()
    tiny = {name: value for name, value in TINY_NERF.items() if name != "guidance_size"}  # the model's own size
    optimizer = page.evaluate("""([tiny, steps]) => {
        const graph = window.app.graph;
        graph.clear();
        const add = (type, values = {}) => {
            const node = window.LiteGraph.createNode(type);
            graph.add(node);
            for (const [name, value] of Object.entries(values))
                node.widgets.find(widget => widget.name === name).value = value;
            return node;
        };
        const link = (from, output, to, input) =>
            from.connect(from.findOutputSlot(output), to, to.findInputSlot(input));
        const model = add('NFSD_DemoModel', {prior: 'shapes'}), views = add('NFSD_ViewPrompts', {text: 'a red mug'});
        const guidance = add('NFSD_ScoreDistillationGuidance'), nerf = add('NFSD_NeRFRepresentation', tiny);
        const optimizer = add('NFSD_Optimizer', {steps}), shown = add('PreviewAny');
        link(model, 'CLIP', views, 'clip');
        link(model, 'MODEL', guidance, 'model');
        link(views, 'positive', guidance, 'positive');
        link(model, 'CLIP', guidance, 'clip');
        link(guidance, 'guidance', optimizer, 'guidance');
        link(nerf, 'nerf', optimizer, 'representation');
        link(model, 'VAE', optimizer, 'vae');
        link(optimizer, 'statistics', shown, 'source');
        window.nfsdRuns = [];
        const api = window.app.api;
        api.addEventListener('execution_start', () => window.nfsdRuns.push({progress: [], end: null}));
        api.addEventListener('progress', event => {
            const run = window.nfsdRuns.at(-1);
            if (event.detail.node !== String(optimizer.id)) return;
            run.progress.push(event.detail.value);
            if (window.nfsdRuns.length === 1 && event.detail.value === 2) fetch('/api/interrupt', {method: 'POST'});
        });
        for (const end of ['execution_success', 'execution_interrupted', 'execution_error'])
            api.addEventListener(end, event => { window.nfsdRuns.at(-1).end = end; });
        return optimizer.id;
    }""", [tiny, RESUMED_STEPS])
    for run in range(2):
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        page.page.wait_for_function("run => window.nfsdRuns[run]?.end", arg=run, timeout=RUN_MS)
    first, second = page.evaluate("() => window.nfsdRuns")
    assert first["end"] == "execution_interrupted" and 2 <= first["progress"][-1] < RESUMED_STEPS, first
    assert second["end"] == "execution_success", second
    # Resumed, not restarted: it starts after the steps the page saw (the step that was running when Cancel came
    # finishes and is saved, though its progress message may not reach the page) and runs on to the end (a
    # preview repeats its step's value).
    start = second["progress"][0]
    assert first["progress"][-1] < start < RESUMED_STEPS, (first, second)
    assert second["progress"] == sorted(second["progress"]), second
    assert sorted(set(second["progress"])) == list(range(start, RESUMED_STEPS + 1)), second
    seed = page.evaluate("""id => window.app.graph.getNodeById(id).widgets
        .find(widget => widget.name === 'seed').value""", optimizer)
    assert seed == 0  # the fresh node's seed, unchanged by two queues
    assert page.errors == [], page.errors

