"""The endpoints each served model takes batches for: the models file's `endpoints`, or those of the model's runner.
Settings act when they are imported, so each case is a new Python process."""

from __future__ import annotations

import json

from tests.stack import finished, settings_process

SHOW = """
import json
from django.conf import settings
print(json.dumps({name: spec["endpoints"] for name, spec in settings.BATCHSERVER_MODELS.items()}))
"""


def with_models_file(tmp_path, models: dict, *, ok: bool = True) -> str:
    (tmp_path / "models.json").write_text(json.dumps(models))
    return finished(settings_process(SHOW, tmp_path, BATCHSERVER_MODELS_FILE=str(tmp_path / "models.json")), ok=ok)


def test_a_pooling_model_serves_embeddings_score_and_rerank_by_default(tmp_path):
    endpoints = json.loads(finished(settings_process(SHOW, tmp_path)))
    assert endpoints == {
        "SmolLM2-135M-Instruct": ["/v1/chat/completions", "/v1/completions", "/v1/responses"],
        "all-MiniLM-L6-v2": ["/v1/embeddings", "/v1/score", "/v1/rerank"],
    }


def test_the_models_file_names_the_endpoints_of_a_model(tmp_path):
    models = {
        "reranker": {"path": "/models/bge-reranker", "engine_args": {"runner": "pooling"}, "endpoints": ["/v1/rerank"]}
    }
    endpoints = json.loads(with_models_file(tmp_path, models))
    assert endpoints == {"reranker": ["/v1/rerank"]}


def test_an_unknown_endpoint_stops_the_process_and_names_the_known_ones(tmp_path):
    for endpoints in (["/v1/moderations"], [], "/v1/rerank"):
        error = with_models_file(tmp_path, {"m": {"path": "/models/m", "endpoints": endpoints}}, ok=False)
        assert "ImproperlyConfigured" in error
        assert (
            "Model 'm': 'endpoints' must be a non-empty list of /v1/chat/completions, /v1/completions, /v1/responses, "
            "/v1/embeddings, /v1/score, /v1/rerank" in error
        )
