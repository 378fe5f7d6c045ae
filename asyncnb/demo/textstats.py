"""The example predictor of the README and `make demo`."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from ..runtime.progress import report_progress

_POSITIVE = {"good", "great", "love", "excellent", "happy", "fast", "nice", "best"}
_NEGATIVE = {"bad", "awful", "hate", "slow", "sad", "worst", "broken", "poor"}


class TextStats:
    """A tiny document analyser: word counts, top words and a lexicon sentiment score."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.top = int(config.get("top", 3))
        self.delay_s = float(config.get("delay_s", 0.0))

    def predict(self, payload: Any) -> dict[str, Any]:
        text = payload["text"] if isinstance(payload, dict) else str(payload)
        words = re.findall(r"[a-z']+", text.lower())
        report_progress(0.5, "counted words")
        time.sleep(self.delay_s)
        score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
        report_progress(1.0, "scored")
        return {
            "words": len(words),
            "top": [w for w, _ in Counter(words).most_common(self.top)],
            "sentiment": "positive" if score > 0 else "negative" if score < 0 else "neutral",
        }
