"""Random and mutated messages against the live servers, at a size that keeps the suite fast
(``python -m bench.fuzz`` runs the same at 10,000 LSP messages and 5,000 HTTP requests)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import http_session, lsp_session, start_http


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31))
def test_fuzzed_lsp_sessions_answer_every_request_and_keep_documents_in_sync(
        parrot_checkpoint, seed):
    result = lsp_session(str(parrot_checkpoint), messages=150, seed=seed)
    assert result["exit_code"] == 0 and result["requests_answered"] > 20


@pytest.fixture(scope="module")
def http_server(parrot_checkpoint):
    proc, url = start_http(str(parrot_checkpoint), "fuzz-key")
    yield url, proc
    proc.terminate()
    proc.wait(30)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31))
def test_fuzzed_fim_requests_never_get_a_server_error(http_server, seed):
    url, proc = http_server
    result = asyncio.run(http_session(url, "fuzz-key", requests=80, seed=seed))
    assert result["answered"] + result["hung_up"] == 80 and proc.poll() is None
