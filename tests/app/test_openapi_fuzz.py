"""Schemathesis against the app's own OpenAPI document, in process (ASGI), keys required.

Every operation gets generated requests, valid and invalid (bounded: ``GCN_FUZZ_EXAMPLES`` per
operation, default 25, derandomized so a run is repeatable); path ids are sometimes swapped for
ids of real rows (a dataset, a model, finished jobs) so that requests reach past the 404s. Every
response must be no 5xx, carry a documented status and content type, match its schema, and
honour the API key (schemathesis also replays requests without it); schema-invalid requests must
be refused. All of schemathesis's checks run except ``positive_data_acceptance`` ("a schema-valid
request gets 2xx"): the schema cannot say that a file must be a real PNG, that a dataset id must
exist, or that an image must be large enough for the net, and those are 4xx by design.
The number of cases run is written to ``test-output/reliability/schemathesis.json``
(docs/reliability.md reports it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, strategies as st

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from schemathesis.checks import positive_data_acceptance  # noqa: E402

from app.main import create_app  # noqa: E402
from service.auth import KeyStore  # noqa: E402
from service.db import TrainedModel  # noqa: E402
from service.jobs import JobKind, new_id  # noqa: E402
from service.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("GCN_TEST_OUTPUT", ROOT / "test-output")) / "reliability"
EXAMPLES = int(os.environ.get("GCN_FUZZ_EXAMPLES", "25"))


def _app():
    """The app under test, on a data folder of its own (removed at exit), and an API key; the rows
    the requests aim at are made by the fixture."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gcn-fuzz-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    settings = Settings(data_dir=folder, auth="required", max_upload_bytes=256 * 1024, max_request_bytes=2 * 2**20,
                        max_dataset_images=4, max_queued_jobs=50)
    app = create_app(settings)
    app.state.services.db.create_all()
    new = KeyStore(app.state.services.db).create(name="fuzz")
    return app, new.token, new.row.id


APP, TOKEN, KEY_ID = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
STATE: dict = {}
COUNT = {"cases": 0, "operations": set(), "statuses": {}}


@schema.hook
def flatmap_path_parameters(ctx, path_parameters):
    """Half the time, aim at real rows instead of random ids."""
    if not path_parameters:
        return st.just(path_parameters)
    real = {k: STATE["ids"].get(k, v) for k, v in path_parameters.items()}
    return st.sampled_from([path_parameters, real])


@schema.auth()
class ApiKeyAuth:
    """The key goes in through schemathesis's auth (so that it knows which requests are meant to
    be authenticated, and checks that the others are refused)."""

    def get(self, case, ctx):
        return TOKEN

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module", autouse=True)
def seeded():
    """A key, and rows for it: a dataset, a model, a finished job."""
    from service.artifacts import keys, png_bytes
    from service.db import Dataset

    services = APP.state.services
    key_id = KEY_ID
    noise = Image.effect_noise((64, 64), 40).convert("RGB")
    d = Dataset(id=new_id(), kind="texture", image_count=1, sizes=[[64, 64]], api_key_id=key_id)
    services.artifacts.put(keys.dataset_image(d.id, 0), png_bytes(noise))
    services.store.add(d)
    m = TrainedModel(id=new_id(), dataset_id=d.id, job_id=new_id(), preset="texture-fast", kind="texture",
                     learner="short_run", image_size=32, chain_size=None, iterations=1,
                     config={"sample_steps": 5, "layers": [{"out_channels": 8, "kernel": 3, "stride": 1, "padding": 1}]},
                     curve=[{"iteration": 1, "gap": 0.5}], api_key_id=key_id)
    services.store.add(m)
    services.artifacts.put(keys.model_weights(m.id), b"not really weights")
    done = services.store.create(JobKind.sample, {"n": 1}, model_id=m.id, api_key_id=key_id)
    services.store.request_cancel(done.id)  # finished: its event stream ends at once
    STATE.update(ids={"dataset_id": d.id, "model_id": m.id, "job_id": done.id})
    yield
    services.db.dispose()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "schemathesis.json").write_text(json.dumps({
        "cases": COUNT["cases"], "operations": len(COUNT["operations"]), "examples_per_operation": EXAMPLES,
        "statuses": dict(sorted(COUNT["statuses"].items())), "schemathesis": schemathesis.__version__,
    }, indent=2))


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_openapi_document(case):
    with TestClient(APP, raise_server_exceptions=False) as client:
        response = case.call_and_validate(session=client, excluded_checks=[positive_data_acceptance])
    COUNT["cases"] += 1
    COUNT["operations"].add(f"{case.operation.method.upper()} {case.operation.path}")
    COUNT["statuses"][str(response.status_code)] = COUNT["statuses"].get(str(response.status_code), 0) + 1
