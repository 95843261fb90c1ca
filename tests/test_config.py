from dlm_lsp.config import Settings, allowed_key_envs, apply_settings, settings_schema


def test_camel_case_options_are_applied():
    s, msgs = apply_settings({"contextTokens": 256, "confidenceThreshold": 0.5,
                              "remote": {"apiKeyEnv": "DLM_TEAM_KEY"}})
    assert (s.context_tokens, s.confidence_threshold, s.remote.api_key_env) == (
        256, 0.5, "DLM_TEAM_KEY")
    assert msgs == []


def test_a_workspace_cannot_send_an_arbitrary_secret_as_the_api_key():
    s, msgs = apply_settings({"remote": {"apiKeyEnv": "AWS_SECRET_ACCESS_KEY"}})
    assert s.remote.api_key_env == "DLM_API_KEY"
    assert "must start with DLM_" in msgs[0] and "--allow-api-key-env" in msgs[0]
    allowed_key_envs.add("TEAM_TOKEN")
    try:
        s, msgs = apply_settings({"remote": {"apiKeyEnv": "TEAM_TOKEN"}})
        assert s.remote.api_key_env == "TEAM_TOKEN" and msgs == []
    finally:
        allowed_key_envs.discard("TEAM_TOKEN")


def test_client_only_keys_of_the_section_are_accepted_silently():
    s, msgs = apply_settings({"serverPath": "/usr/bin/dlm-lsp", "serverArgs": ["-v"],
                              "maxTokens": 9})
    assert s.max_tokens == 9 and msgs == []


def test_section_wrapper_is_unwrapped():
    s, _ = apply_settings({"dlm": {"maxTokens": 5}})
    assert s.max_tokens == 5


def test_bad_values_keep_the_previous_value_with_a_clear_message():
    base = Settings(max_steps=7)
    s, msgs = apply_settings({"maxSteps": -1, "device": "tpu", "temperature": "hot"}, base)
    assert s.max_steps == 7 and s.device == "auto" and s.temperature == 0.0
    assert any("dlm.maxSteps must be an integer from 1 to 1024" in m for m in msgs)
    assert any("dlm.device must be one of auto, cpu, cuda, mps" in m for m in msgs)
    assert len(msgs) == 3


def test_unknown_keys_are_reported_and_ignored():
    s, msgs = apply_settings({"frobnicate": 1})
    assert s == Settings() and msgs == ["unknown setting dlm.frobnicate ignored"]


def test_non_object_settings_do_not_crash():
    s, msgs = apply_settings(["nope"])
    assert s == Settings() and "must be an object" in msgs[0]


def test_integers_are_accepted_for_float_settings_and_bools_rejected_for_ints():
    s, msgs = apply_settings({"temperature": 1, "threads": True})
    assert s.temperature == 1.0 and isinstance(s.temperature, float)
    assert s.threads == 0 and len(msgs) == 1


def test_schema_lists_every_setting_with_defaults():
    schema = settings_schema()
    assert schema["model"] == "embedded" and schema["remote.url"].startswith("http://")
    assert "contextTokens" in schema and "debounceMs" in schema
