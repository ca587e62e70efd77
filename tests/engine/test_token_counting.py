"""Token counting at start: the web server's processes load each model's tokenizer before the first batch is
validated (inline, in the process that created it), so that no tokenizer load sits on the first batch's path."""

from __future__ import annotations

from inference.engines.tokenizer import load_tokenizer
from inference.tokens import count_input_tokens, warm_up


def test_warm_up_loads_the_tokenizer_of_every_model_on_this_machine():
    load_tokenizer.cache_clear()
    warm_up()
    # SmolLM2 and MiniLM (tests/models.json); the test engines have no tokenizer and no folder.
    assert load_tokenizer.cache_info().currsize == 2
    before = load_tokenizer.cache_info()
    counts = count_input_tokens(
        "SmolLM2-135M-Instruct", "/v1/chat/completions", [{"messages": [{"role": "user", "content": "Hi"}]}]
    )
    after = load_tokenizer.cache_info()
    assert counts[0] > 1
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)  # the first batch finds it loaded
