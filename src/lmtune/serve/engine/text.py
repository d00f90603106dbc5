"""Generated tokens to text deltas, with stop strings: nothing past a stop string is ever sent."""

from __future__ import annotations


class StopText:
    """Decodes a growing reply and says what new text is safe to send.

    Text that could be the start of a stop string, or an incomplete UTF-8 character (decoded as
    U+FFFD), is held back until the next token settles it, so a streamed reply never shows a stop
    string or half a character.

    Args:
        tokenizer: decodes token ids (special tokens are skipped).
        stop: strings that end the reply; they are not part of it.
    """

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop or [] if s]
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already returned
        self.text = ""

    def add(self, token: int) -> tuple[str, bool]:
        """Append a token; return (new text to send, whether a stop string ended the reply)."""
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        start = max(self.sent - max((len(s) for s in self.stop), default=0), 0)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            end = min(hits)
            self.text = self.text[:end]
            return self._take(max(end, self.sent)), True
        safe = len(self.text)
        while safe > self.sent and self.text[safe - 1] == "\ufffd":
            safe -= 1
        head = self.text[:safe]
        hold = max((k for s in self.stop for k in range(1, min(len(s), safe - self.sent + 1))
                    if head.endswith(s[:k])), default=0)
        return self._take(safe - hold), False

    def flush(self) -> str:
        """The text still held back, when the reply ends for another reason (EOS, length)."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        piece = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return piece
