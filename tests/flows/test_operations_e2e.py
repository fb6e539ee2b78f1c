"""Operating tokenmill, end to end, as a person would: ``tokenmill up``, ``prefect deploy --all`` from
prefect.yaml, a custom run of the ``pipeline/tiny`` deployment clicked through the Prefect UI (headless
Chromium driven by playwright) and run by a process worker, ``tokenmill serve`` running an on-demand
deployment, the run and its lineage in the MLflow server, and both UIs rendered in headless Chromium.
Real servers on 127.0.0.1 (free ports), real subprocesses; screenshots are kept under the run folder
and copied to ``runs/ci-artifacts/screenshots`` for CI.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import psutil
import pytest

from tokenmill import services
from tokenmill.core import tracking
from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CI_ARTIFACTS = REPO_ROOT / "runs" / "ci-artifacts" / "screenshots"

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process and everything it started (serve and workers run flows as children)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """``tokenmill up`` in a fresh project home; the environment a shell in that project would have."""
    home = tmp_path_factory.mktemp("project") / ".tokenmill"
    urls = services.up(home, prefect_port=_free_port(), mlflow_port=_free_port(), timeout=240)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(TOKENMILL_HOME=str(home), PWD=str(REPO_ROOT))  # prefect.yaml's pull step reads $PWD
    out = tmp_path_factory.mktemp("runs")
    state = {"home": home, "urls": urls, "env": env, "out": out, "shots": out / "tiny" / "screenshots"}
    state["shots"].mkdir(parents=True)
    try:
        yield state
    finally:
        services.down(home)


def _client(stack):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self.settings = temporary_settings({PREFECT_API_URL: stack["urls"]["prefect_api"]})
            self.settings.__enter__()
            self.client = get_client(sync_client=True)
            return self.client.__enter__()

        def __exit__(self, *exc):
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return _Client()


def _wait_final(stack, flow_run_id, timeout: float = 900):
    with _client(stack) as client:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(3)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s (last state {run.state})")


def _trigger_and_wait(stack, name: str, parameters: dict, timeout: float = 900):
    """Create a run of deployment ``name`` through the API (as ``prefect deployment run`` does) and wait for it."""
    with _client(stack) as client:
        dep = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(dep.id, parameters=parameters)
    return _wait_final(stack, run.id, timeout)


def test_deploy_registers_every_deployment_of_prefect_yaml(stack):
    env = {**stack["env"], "PREFECT_API_URL": stack["urls"]["prefect_api"]}
    subprocess.run(
        [str(BIN / "prefect"), "work-pool", "create", "tokenmill-process", "--type", "process"],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from tokenmill.flows.deployments import deployment_entries

    with _client(stack) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    names = {f"{flows[d.flow_id]}/{d.name}": d for d in deployments}
    assert set(names) == {e["full_name"] for e in deployment_entries()}
    nightly = names["data/nightly"]
    assert nightly.work_pool_name == "tokenmill-process"
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert not git_status_changed()  # deploying did not rewrite prefect.yaml


def git_status_changed() -> bool:
    out = subprocess.run(
        ["git", "status", "--porcelain", "prefect.yaml"], cwd=REPO_ROOT, check=False, capture_output=True, text=True
    )
    return bool(out.stdout.strip())


def _run_named(stack, deployment_id, run_name: str, timeout: float):
    """The flow run of ``deployment_id`` called ``run_name``, once the server has it; None after ``timeout``."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterName,
    )

    deadline = time.time() + timeout
    with _client(stack) as client:
        while time.time() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            )
            if runs:
                return runs[0]
            time.sleep(1)
    return None


def _submit_created_no_run(stack, page, deployment_id, run_name: str, trouble: list[str]) -> None:
    """Fail with what the page, the browser, the server's runs and the server's log said; keep a screenshot."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    CI_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(CI_ARTIFACTS / "prefect-submit-failed.png"), full_page=True)
    with _client(stack) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    server_log = (stack["home"] / "services" / "logs" / "prefect.log").read_text()[-3000:]
    pytest.fail(
        f"Submit created no run named {run_name!r}.\nPage {page.url}:\n{page.inner_text('body')[:2000]}\n"
        f"Runs of the deployment: {[(r.name, r.parameters, r.state_name) for r in runs]}\n"
        "Browser:\n" + "\n".join(trouble[-30:]) + f"\nServer log:\n{server_log}"
    )


def _needs(stack, key: str):
    """What an earlier test of this module left in ``stack``; a clear failure if that test failed."""
    if key not in stack:
        pytest.fail(f"needs {key!r}, which an earlier test of this module did not produce (it failed: see above)")
    return stack[key]


def _submit_until_accepted(page, attempts: int = 5) -> list[int]:
    """Click Submit until the server answers with something other than 503; returns every status it gave.

    A 503 is the Prefect server's "busy, try again": its SQLite store was locked by a concurrent write
    (a worker's poll, a background service) and the request created nothing. The UI then only shows
    "Oops. Something went wrong" over the form, so a person closes that and clicks Submit again, as this
    does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    submit = page.get_by_role("button", name="Submit")
    answers = []
    for _ in range(attempts):
        expect(submit).to_be_enabled()
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run")) as sent:
            submit.click()
        answers.append(sent.value.status)
        if answers[-1] != 503:
            break
        # Toasts lie over Submit: "Something went wrong trying to create a flow run", which times out, and
        # "Oops. Something went wrong." (twice, stacked), which stays until closed, the top one first.
        expect(page.get_by_text("trying to create a flow run")).to_have_count(0, timeout=30_000)
        closes = page.locator(".p-toast__close-btn")
        for _ in range(4):
            if not closes.count():
                break
            try:
                closes.last.click(timeout=5_000)
            except PlaywrightTimeoutError:  # closing one closed both, between count() and click()
                pass
        expect(page.get_by_text("Something went wrong")).to_have_count(0)
    return answers


def _custom_run_from_the_ui(stack, name: str, overrides: list[str], run_name: str, shots: Path) -> str:
    """As a person does in the Prefect UI: deployment page → Run → Custom run, name the run, add each
    override as a list item, Submit (again if the server answers 503, see ``_submit_until_accepted``),
    then open the new run's page. Returns the flow run id the server gave the submitted run. If Submit
    creates no run, the failure carries what the page and the server said, and a screenshot of the page
    is kept for CI."""
    from playwright.sync_api import expect, sync_playwright

    with _client(stack) as client:
        dep = client.read_deployment_by_name(name)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            trouble = []  # for the failure message: what the browser saw go wrong
            page.on("console", lambda m: trouble.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on(
                "response",
                lambda r: trouble.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None,
            )
            page.on("requestfailed", lambda r: trouble.append(f"failed {r.method} {r.url}: {r.failure}"))
            page.goto(f"{stack['urls']['prefect_ui']}/deployments/deployment/{dep.id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run", exact=True).click()
            run_name_box = page.locator(".flow-run-name-input input")
            expect(run_name_box).not_to_have_value("")  # the form has loaded (it fills in a random name)
            items = page.locator(".schema-form-property-array-item textarea")
            for i, override in enumerate(overrides):
                page.get_by_role("button", name="Add item").click()
                # fill the new item, not the one before it: it may not be rendered yet when the click returns
                expect(items).to_have_count(i + 1)
                items.nth(i).fill(override)
            for i, override in enumerate(overrides):
                expect(items.nth(i)).to_have_value(override)
            run_name_box.fill(run_name)
            run_name_box.press("Tab")  # leave the field, as a person moving on to Submit does
            expect(run_name_box).to_have_value(run_name)
            page.screenshot(path=str(shots / "prefect-custom-run.png"), full_page=True)
            answers = _submit_until_accepted(page)
            print(f"create_flow_run answered {answers}")
            run = _run_named(stack, dep.id, run_name, timeout=60) if answers[-1] < 300 else None
            if run is None:
                _submit_created_no_run(stack, page, dep.id, run_name, trouble + [f"Submit answers: {answers}"])
            page.goto(f"{stack['urls']['prefect_ui']}/runs/flow-run/{run.id}")
            expect(page.locator(".page-heading").first).to_contain_text(run_name)
            return str(run.id)
        finally:
            browser.close()


def test_a_deployment_run_from_the_prefect_ui_runs_the_pipeline_on_a_process_worker(stack):
    log = open(stack["out"] / "worker.log", "w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "tokenmill-process"],
        env={**stack["env"], "PREFECT_API_URL": stack["urls"]["prefect_api"]},
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    overrides = [f"run.output_dir={stack['out']}", "train.max_steps=30", "train.log_every=10"]
    try:
        flow_run_id = _custom_run_from_the_ui(stack, "pipeline/tiny", overrides, "from-the-ui", stack["shots"])
        run = _wait_final(stack, flow_run_id)
    finally:
        _stop(worker)
        log.close()
    assert run.state.is_completed(), (stack["out"] / "worker.log").read_text()[-4000:]
    assert run.name == "from-the-ui"
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with _client(stack) as client:
        same_name = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run.name])))
    assert [r.id for r in same_name] == [run.id]  # one Submit, one run
    assert run.parameters == {"config_path": "conf/tiny.yaml", "overrides": overrides}  # as typed in the form
    stack["flow_run"] = run


def test_the_run_is_in_the_mlflow_server_with_its_lineage(stack):
    from mlflow.tracking import MlflowClient

    run = _needs(stack, "flow_run")
    client = MlflowClient(tracking_uri=stack["urls"]["mlflow"])
    exp = client.get_experiment_by_name("tokenmill")
    (mlrun,) = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`tokenmill.prefect_flow_run_id` = '{run.id}'"
    )
    assert mlrun.info.status == "FINISHED"
    tags = mlrun.data.tags
    assert tags["tokenmill.prefect_deployment"] == "pipeline/tiny"
    assert tags["tokenmill.prefect_flow_run_url"].endswith(f"/flow-run/{run.id}")
    run_dir = stack["out"] / "tiny"
    assert tags["tokenmill.data_manifest"] == str(run_dir / "data" / "manifest.json")
    assert tags["tokenmill.tokens_manifest"] == str(run_dir / "tokens" / "manifest.json")
    train = read_manifest(run_dir / "train" / "manifest.json", stage="train")
    assert train["mlflow_run_id"] == mlrun.info.run_id
    assert mlrun.data.metrics["val/loss"] == pytest.approx(train["val_loss"])
    assert mlrun.data.metrics["eval/loss"] == pytest.approx(train["val_loss"], abs=1e-4)
    # the server stores artifacts in the project home, not in the run folder
    stored = stack["home"] / "services" / "mlflow" / "artifacts"
    assert list(stored.rglob("MLmodel")) and list(stored.rglob("*.safetensors"))  # the logged MLflow model
    stack["mlflow_run"] = mlrun


def test_tokenmill_serve_runs_an_on_demand_deployment(stack):
    _needs(stack, "flow_run")  # evaluates the model that run trained
    log_path = stack["out"] / "serve.log"
    log = open(log_path, "w")
    serve = subprocess.Popen(
        [str(BIN / "tokenmill"), "serve", "evaluate/on-demand", "--no-schedules"],
        env=stack["env"],
        cwd=stack["out"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while "being served" not in log_path.read_text() and time.time() < deadline:
            assert serve.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
        train_manifest = stack["out"] / "tiny" / "train" / "manifest.json"
        run = _trigger_and_wait(
            stack,
            "evaluate/on-demand",
            {
                "train_manifest": str(train_manifest),
                "config_path": "conf/tiny.yaml",
                "overrides": [f"run.output_dir={stack['out']}", "train.max_steps=30", "train.eval_max_blocks=16"],
            },
            timeout=300,
        )
    finally:
        _stop(serve)
        log.close()
    assert run.state.is_completed(), log_path.read_text()[-4000:]
    evaluated = read_manifest(stack["out"] / "tiny" / "train" / "evaluate" / "manifest.json", stage="evaluate")
    assert evaluated["examples"] == 16  # this run's parameters, not the pipeline's cached evaluation


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed; `make test` installs Debian's chromium (apt-get install chromium)")
    return found


def _render(url: str, screenshot: Path, budget_ms: int, tmp: Path) -> str:
    """The page's text after its scripts ran for ``budget_ms`` of virtual time; a screenshot of it too."""
    base = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--virtual-time-budget={budget_ms}",
    ]
    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp / 'dom'}", "--dump-dom", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    subprocess.run(
        [*base, f"--user-data-dir={tmp / 'shot'}", f"--screenshot={screenshot}", url],
        check=False,
        capture_output=True,
        timeout=180,
    )
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.stdout, flags=re.DOTALL)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _tab(url: str, tab: str, wait_for: str, screenshot: Path) -> str:
    """The text of page ``url`` after clicking its tab ``tab`` (the UIs keep tabs out of the URL) and waiting for
    ``wait_for`` to show; a screenshot of it too."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_text(tab, exact=True).first.click()
            try:
                page.get_by_text(wait_for).first.wait_for(timeout=30_000)
            except PlaywrightTimeoutError:
                pass  # the caller's assertion says what the page showed instead
            page.wait_for_timeout(2000)  # charts and cards finish drawing
            page.screenshot(path=str(screenshot), full_page=True)
            return " ".join(page.inner_text("body").split())
        finally:
            browser.close()


def test_both_uis_show_the_run_in_a_browser(stack, tmp_path):
    run, mlrun = _needs(stack, "flow_run"), _needs(stack, "mlflow_run")
    shots = stack["shots"]

    prefect_run = f"{stack['urls']['prefect_ui']}/runs/flow-run/{run.id}"
    prefect_page = _render(prefect_run, shots / "prefect-flow-run.png", 20000, tmp_path / "p")
    assert run.name in prefect_page, prefect_page[:2000]
    assert "Completed" in prefect_page and "pipeline" in prefect_page
    # the root run carries its own summary, not only its subflows
    artifacts = _tab(prefect_run, "Artifacts", "pipeline-summary", shots / "prefect-root-artifacts.png")
    assert "pipeline-summary" in artifacts, artifacts[:2000]
    assert "did not produce any artifacts" not in artifacts

    mlflow_ui, exp = stack["urls"]["mlflow"], mlrun.info.experiment_id
    url = tracking.run_url(stack["urls"]["mlflow"], mlrun.info.run_id)  # the link tokenmill prints
    assert url == f"{mlflow_ui}/#/experiments/{exp}/runs/{mlrun.info.run_id}?workflowType=machine_learning"
    mlflow_page = _render(url, shots / "mlflow-run.png", 30000, tmp_path / "m")
    assert mlrun.info.run_name in mlflow_page, mlflow_page[:2000]
    val = mlrun.data.metrics["val/loss"]
    assert re.search(rf"val/loss\s+{re.escape(repr(val)[:6])}", mlflow_page), mlflow_page[:3000]
    assert "corpus.documents_kept" in mlflow_page  # counts are params, not charts
    charts = _tab(url, "Model metrics", "train", shots / "mlflow-run-metrics.png")
    # the curves come first: no section of single-value data/* or tokens/* bars (before: 16 of them ahead of train/)
    assert re.search(r"\btrain\s*\(\d+\)", charts), charts[:3000]
    assert not re.search(r"\b(data|tokens)\s*\(\d+\)", charts), charts[:3000]
    # in the model-training view, the experiment opens on its runs (MLflow 3's default GenAI view lists none)
    experiment_url = f"{mlflow_ui}/#/experiments/{exp}{tracking.TRAINING_VIEW}"
    experiment = _render(experiment_url, shots / "mlflow-experiment.png", 30000, tmp_path / "e")
    assert mlrun.info.run_name in experiment, experiment[:3000]

    CI_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in (
        "prefect-custom-run.png",
        "prefect-flow-run.png",
        "prefect-root-artifacts.png",
        "mlflow-run.png",
        "mlflow-run-metrics.png",
        "mlflow-experiment.png",
    ):
        assert (shots / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (shots / shot).stat().st_size > 20_000  # a rendered page, not a blank one
        shutil.copyfile(shots / shot, CI_ARTIFACTS / shot)
