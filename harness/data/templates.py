"""Templating: how an example becomes prompt text and response text (``data.template``: the
Alpaca prompt or the model's chat template), before :mod:`harness.data.tokenization`."""

from __future__ import annotations

from ..errors import DataError
from ..schema import DataConfig
from .common import one_line

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

_SENTINEL = "QZXRESPONSEQZX"


def check_template(tokenizer, cfg: DataConfig) -> None:
    """Fail fast (before loading data) when ``data.template=chat`` cannot work with this tokenizer."""
    if cfg.template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DataError("data.template=chat needs a model with a chat template (this tokenizer has "
                        "none); use data.template=alpaca")
    if tokenizer.eos_token_id is None:
        raise DataError("data.template: the tokenizer has no eos token, so responses cannot be terminated")


def _user_text(example: dict) -> str:
    return example["instruction"] + ("\n\n" + example["input"] if example["input"] else "")


def _alpaca_prompt(example: dict) -> str:
    template = ALPACA_PROMPT_INPUT if example["input"] else ALPACA_PROMPT_NO_INPUT
    return template.format(instruction=example["instruction"], input=example["input"])


def _chat_template_error(exc: Exception) -> DataError:
    # Arbitrary templates fail with any jinja error; the user's way out is the same for all.
    return DataError(f"data.template=chat: the model's chat template failed ({one_line(exc)[:160]}); "
                     "use data.template=alpaca")


def _chat_turn_parts(tokenizer) -> tuple[str, list[int]]:
    """How the chat template wraps an assistant reply: (text before it, end-of-turn ids).

    Rendered once with a sentinel reply. Text the template puts between the generation prompt
    and the reply (e.g. an empty think block) becomes part of the trained response; the
    end-of-turn is kept up to and including eos, and eos is appended when it is missing.
    """
    user = [{"role": "user", "content": "Hi"}]
    try:
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    except Exception as exc:  # jinja errors from arbitrary templates
        raise _chat_template_error(exc) from exc
    at = full.find(_SENTINEL)
    before = full[len(prompt):at] if at >= 0 and full.startswith(prompt) else ""
    after = full[at + len(_SENTINEL):] if at >= 0 else ""
    eos = tokenizer.eos_token_id
    end_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    end_ids = end_ids[: end_ids.index(eos) + 1] if eos in end_ids else end_ids + [eos]
    return before, end_ids


def render(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[str], list[str], list[int], bool]:
    """Prompt texts, response texts, end ids, and whether prompts get the tokenizer's specials."""
    responses = [e["output"] for e in examples]
    if cfg.template == "alpaca":
        # add_special_tokens on the prompt adds BOS for tokenizers that use one (Llama...).
        return [_alpaca_prompt(e) for e in examples], responses, [tokenizer.eos_token_id], True
    before, end_ids = _chat_turn_parts(tokenizer)
    conversations = [[{"role": "user", "content": _user_text(e)}] for e in examples]
    try:
        prompts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise _chat_template_error(exc) from exc
    # The template already writes BOS and friends, so the prompt gets no extra specials.
    return prompts, [before + r for r in responses], end_ids, False
