"""Plug-in for external classifiers behind an OpenAI-compatible endpoint.

Off by default. Two output formats are parsed:

- ``llama_guard`` (Llama Guard 3 served by vLLM, TGI, Ollama ...): the text goes as the
  user turn of ``/chat/completions``; the reply is ``safe`` or ``unsafe`` followed by a
  line of category codes (``S1,S14``).
- ``prompt_guard`` (Prompt Guard 2 served as a classifier): ``/classify`` answers
  ``{"data": [{"label": ..., "probs": [benign, malicious]}]}`` (vLLM's pooling API); a
  chat endpoint answering with a label (``BENIGN``, ``MALICIOUS``, ``INJECTION``,
  ``JAILBREAK``), optionally followed by a score, is accepted too.

The call has a hard timeout. Any failure — timeout, refused connection, HTTP error,
unparseable reply — yields a ``detect.external.unavailable`` hit that the layer turns
into a deny: a guard that cannot answer does not let text through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ..actions import Severity
from .base import Hit

Format = Literal["llama_guard", "prompt_guard"]
_MALICIOUS = {"MALICIOUS", "INJECTION", "JAILBREAK", "UNSAFE", "LABEL_1"}
_BENIGN = {"BENIGN", "SAFE", "LABEL_0"}


class ExternalError(Exception):
    pass


@dataclass(slots=True)
class ExternalClassifier:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    format: Format = "llama_guard"
    timeout_s: float = 2.0
    threshold: float = 0.5
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None  # injectable for tests

    def _client(self) -> httpx.Client:
        h = dict(self.headers)
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return httpx.Client(base_url=self.base_url.rstrip("/") + "/", headers=h,
                            timeout=httpx.Timeout(self.timeout_s), transport=self.transport)

    def classify(self, text: str) -> tuple[bool, float, str]:
        """(malicious, score, detail). Raises :class:`ExternalError` on any failure."""
        try:
            with self._client() as c:
                if self.format == "prompt_guard":
                    r = c.post("classify", json={"model": self.model, "input": [text]})
                    if r.status_code == 404:
                        r = c.post("chat/completions", json=self._chat(text))
                else:
                    r = c.post("chat/completions", json=self._chat(text))
                r.raise_for_status()
                body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise ExternalError(f"{type(e).__name__}: {e}") from e
        return self.parse(body)

    def _chat(self, text: str) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": text}],
                "temperature": 0, "max_tokens": 20}

    def parse(self, body: Any) -> tuple[bool, float, str]:
        try:
            if isinstance(body, dict) and "data" in body:
                item = body["data"][0]
                probs = item.get("probs")
                if probs:
                    score = float(probs[-1]) if len(probs) == 2 else 1.0 - float(probs[0])
                    return score >= self.threshold, score, str(item.get("label", ""))
                label = str(item["label"]).upper()
                return label in _MALICIOUS, 1.0 if label in _MALICIOUS else 0.0, label
            content = str(body["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ExternalError(f"unexpected reply: {e}") from e
        lines = [ln.strip() for ln in content.splitlines() if ln.strip()]
        if not lines:
            raise ExternalError("empty reply")
        head = lines[0].split()
        label = head[0].upper().strip(".:,")
        if self.format == "llama_guard":
            if label == "SAFE":
                return False, 0.0, "safe"
            if label == "UNSAFE":
                cats = lines[1] if len(lines) > 1 else ""
                return True, 1.0, cats
            raise ExternalError(f"unexpected Llama Guard reply {content[:40]!r}")
        if label in _MALICIOUS or label in _BENIGN:
            score = 1.0 if label in _MALICIOUS else 0.0
            if len(head) > 1:
                try:
                    s = float(head[1])
                    score = s if label in _MALICIOUS else 1.0 - s
                except ValueError:
                    pass
            return score >= self.threshold, score, label
        raise ExternalError(f"unexpected classifier reply {content[:40]!r}")

    def scan(self, text: str) -> list[Hit]:
        try:
            bad, score, detail = self.classify(text)
        except ExternalError as e:
            return [Hit("detect.external.unavailable",
                        f"external classifier {self.model} failed ({e}); failing closed",
                        score=1.0, severity=Severity.HIGH)]
        if not bad:
            return []
        return [Hit(f"detect.external.{self.format}",
                    f"external classifier {self.model} flagged the text ({detail})".rstrip(),
                    score=score, evidence=detail[:80], severity=Severity.HIGH)]
