"""Chat templates of instruct checkpoints: an Instant Edit instruction as a user turn.

A base checkpoint follows an instruction written as a comment above the selection
(``edits.py``). An instruct checkpoint (Dream-Instruct, DiffuCoder-Instruct, LLaDA-Instruct,
Fast-dLLM v2) was tuned on its chat template instead, so the instruction, the selection and
the code around it go in a user turn, and the answer is the span after the assistant header.
Templates come from the checkpoint, so they are rendered in Jinja's immutable sandbox (as
transformers does).
"""

from __future__ import annotations

import re
from functools import lru_cache

from dlm_lsp.model.checkpoint import LoadedModel

FENCE = re.compile(r"^\s*```[\w+-]*\n(.*?)(?:\n```\s*)?$", re.S)


def edit_request(instruction: str, language: str | None, before: str, selected: str,
                 after: str) -> str:
    """The user turn for an edit of `selected`, with the code around it for context."""
    lang = language or ""
    return (f"{' '.join(instruction.split())}\n\n"
            f"Apply this to the code marked SELECTION below and reply with the new code for "
            f"the selection only, in a ```{lang} block.\n\n"
            f"```{lang}\n{before}<<SELECTION\n{selected}\nSELECTION>>{after}\n```")


CURSOR = "<|cursor|>"


def infill_request(before: str, after: str) -> str:
    """The user turn asking an instruct checkpoint for the code at the cursor. No family
    publishes a fill-in-the-middle prompt for its instruct models; this one shows the file
    with the cursor marked and asks for the missing code only."""
    return (f"Write the code that belongs at {CURSOR} in this file. Reply with that code "
            f"only, without repeating the code around it.\n\n```\n{before}{CURSOR}{after}\n```")


@lru_cache(maxsize=8)
def _template(source: str):  # noqa: ANN202
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def chat_ids(model: LoadedModel, user: str) -> list[int]:
    """Token ids of the chat prompt for one user turn, ending at the assistant's header."""
    if not model.chat_template:
        raise ValueError(f"{model.path} has no chat template")
    tok = model.tokenizer
    hole = "\x00user\x00"  # rendered in place of the user's text, which stays plain text
    text = _template(model.chat_template).render(
        messages=[{"role": "user", "content": hole}], add_generation_prompt=True,
        bos_token=model.bos_token, eos_token="")
    specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    ids: list[int] = []
    for k, markup in enumerate(text.split(hole)):
        if k:
            ids += model.encode(user)
        for part in re.split(pattern, markup) if specials else [markup]:
            if part in specials:
                ids.append(specials[part])
            elif part:
                ids += model.encode(part)
    return ids


def unfence(answer: str) -> str:
    """The code inside a reply's ``` block (the reply itself when it has none)."""
    m = FENCE.match(answer)
    return m.group(1) if m else answer
