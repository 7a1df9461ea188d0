"""One memory budget end to end: a request's body as it streams, its decoded inputs and its answer
are held in one account, released only after the answer has been sent."""

from fastapi.testclient import TestClient

from latentad.serve.app import create_app
from latentad.serve.budget import Budget
from latentad.serve.load import multipart

LOCAL = "http://127.0.0.1"


def test_a_request_is_held_until_its_last_holder_lets_go():
    budget = Budget(1000)
    hold = budget.hold()
    hold.add(600)
    job = hold.share()  # handed to the model thread
    job.release()  # the job left the queue: the answer is still being written
    assert budget.held == 600
    hold.release()  # the answer has been sent
    assert budget.held == 0


def test_bodies_in_flight_count_against_the_budget(run, images):
    api = create_app(run, memory_budget_mb=1.0)
    service = api.state.service
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images[:1]]
    with TestClient(api, base_url=LOCAL) as c:
        other = service.budget.hold()
        other.add(service.budget.limit - 1000)  # another request's body fills the budget
        r = c.post("/predict", files=files)
        assert r.status_code == 503 and "memory budget" in r.json()["detail"]
        other.release()
        assert c.post("/predict", files=files).status_code == 200
        big = [("files", ("big.png", images[0].read_bytes() + bytes(2 << 20), "image/png"))]
        r = c.post("/predict", files=big)  # a body larger than the whole budget
        assert r.status_code == 413 and "--memory-budget-mb" in r.json()["detail"]
        assert service.budget.held == 0
    service.close()


def test_the_answer_counts_against_the_budget_until_it_is_sent(run, images):
    files = [(p.name, p.read_bytes()) for p in images[:3]]
    api = create_app(run)
    with TestClient(api, base_url=LOCAL) as c:
        answer = c.post("/predict?map=png&masks=png", files=[("files", (n, d, "image/png")) for n, d in files])
        c3, h, w = api.state.service.detector.config.channels, *api.state.service.detector.input_shape
    api.state.service.close()
    body = len(multipart(files)[0])
    inputs = 3 * c3 * h * w * 4
    # room for the body and the inputs, not for the answer as well
    api = create_app(run, memory_budget_mb=(body + inputs + len(answer.content) // 2) / (1 << 20))
    with TestClient(api, base_url=LOCAL) as c:
        r = c.post("/predict?map=png&masks=png", files=[("files", (n, d, "image/png")) for n, d in files])
        assert r.status_code == 413 and "answer" in r.json()["detail"]
        small = c.post("/predict?masks=none", files=[("files", (n, d, "image/png")) for n, d in files])
        assert small.status_code == 200
        assert api.state.service.budget.held == 0
    api.state.service.close()
