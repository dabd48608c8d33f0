"""The official `openai` Python client against a standalone llmroute sidecar."""

import openai
import pytest


@pytest.fixture()
def client(llmroute):
    sidecar, _ = llmroute
    return openai.OpenAI(base_url=sidecar.base_url, api_key="sk-client-token-never-forwarded", max_retries=0)


def test_chat_completion(client, llmroute):
    _, fakes = llmroute
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    served = raw.headers["x-llmroute-deployment"]
    assert served in ("llm/chat-a", "llm/chat-b")
    assert completion.choices[0].message.content == f"served by {served.split('/')[1]}"
    assert raw.headers["x-llmroute-model-group"] == "gpt-4o"
    assert raw.headers["x-llmroute-attempts"] == "1"
    assert fakes.stats(served.split("/")[1])["saw_client_authorization"] is False


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [c for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3
    assert text.startswith("served by chat-")


def test_responses_with_previous_response_id(client):
    first = client.responses.with_raw_response.create(model="gpt-4.1", input="hello")
    response = first.parse()
    assert response.id.startswith("resp_llmr1.")
    holder = first.headers["x-llmroute-deployment"]
    assert response.output_text == f"served by {holder.split('/')[1]}"
    for _ in range(5):
        follow = client.responses.with_raw_response.create(model="gpt-4.1", input="more", previous_response_id=response.id)
        assert follow.headers["x-llmroute-deployment"] == holder
        response = follow.parse()
        assert response.id.startswith("resp_llmr1.")


def test_streaming_responses_ids_are_wrapped(client):
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    completed = [e for e in events if e.type == "response.completed"]
    assert completed and completed[0].response.id.startswith("resp_llmr1.")
    assert any(e.type == "response.output_text.delta" for e in events)


def test_embeddings(client):
    result = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert result.data[0].embedding == [0.1, 0.2, 0.3]


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o", "gpt-4.1", "text-embedding-3-small"} <= ids


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"


def test_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-llmroute-min-quality-tier": "x"})
    assert e.value.code == "invalid_header"


def test_upstream_failures_are_server_errors_naming_attempts(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert e.value.code == "upstream_failed"
    assert "llm/down" in e.value.message
