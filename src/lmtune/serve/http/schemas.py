"""Request bodies of the inference endpoints, validated as the OpenAI API validates them.

Unknown fields are rejected as OpenAI rejects them. Fields of the API that lmtune does not
implement (tools, penalties, ...) are accepted at their neutral value and rejected otherwise, so
a client never gets a silently different behaviour. ``logprobs`` and lmtune's own ``fields`` are
parsed here and checked by the endpoint: only a run's task model (``<run>:task``) takes them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmtune.serve.errors import APIError

IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "prompt_cache_retention",
           "safety_identifier", "parallel_tool_calls", "reasoning_effort", "verbosity"}
# field -> values that mean "not used"
NEUTRAL: dict[str, tuple] = {
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none"), "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "modalities": (None, ["text"]),
    "audio": (None,), "prediction": (None,),
    "web_search_options": (None,), "response_format": (None, {"type": "text"}), "echo": (None, False),
    "suffix": (None, ""), "best_of": (None, 1),
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # lmtune's: the template fields besides the raw input, for a run's task model (``<run>:task``).
    fields: dict[str, str | int | float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    @model_validator(mode="after")
    def _extras(self):
        for key, value in (self.model_extra or {}).items():
            if key in IGNORED:
                continue
            if key in NEUTRAL:
                if value not in NEUTRAL[key]:
                    raise APIError(400, f"'{key}' is not supported by lmtune serve; leave it unset.", key,
                                   "unsupported_parameter")
                continue
            raise APIError(400, f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
        return self

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def explicit_limit(self) -> int | None:
        """The reply length limit the client gave (None: the endpoint's default applies)."""
        return self.limit if self.model_fields_set & {"max_tokens", "max_completion_tokens"} else None


class Message(BaseModel):
    """A chat message; content may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{index}].content: only text parts are supported "
                               f"(got type {part.get('type')!r}).", f"messages[{index}].content", "invalid_value")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None  # only task models of classification runs answer with log-probabilities
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def wants_logprobs(self) -> bool:
        return bool(self.logprobs or self.top_logprobs)

    @property
    def top_k(self) -> int:
        """Alternatives asked for besides the answer."""
        return self.top_logprobs or 0

    def chat(self) -> list[dict[str, str]]:
        """Messages as the chat template takes them (``developer`` is the newer name of ``system``)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
                for i, m in enumerate(self.messages)]

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)  # as for chat: task models of classification runs only

    @property
    def wants_logprobs(self) -> bool:
        return bool(self.logprobs)  # 0 was always accepted as "none" (its neutral value)

    @property
    def top_k(self) -> int:
        return self.logprobs or 0

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("must not be empty")
        return value

    def prompts(self, tokenizer) -> list[list[int]]:
        """Token ids of each prompt (text is tokenized as the model's tokenizer does by default)."""
        value = self.prompt
        if isinstance(value, str):
            return [tokenizer(value)["input_ids"]]
        if all(isinstance(v, int) for v in value):
            return [list(value)]
        return [tokenizer(v)["input_ids"] if isinstance(v, str) else list(v) for v in value]

    @property
    def limit(self) -> int | None:
        return self.max_tokens
