"""Energy-based voice-activity detection on 20 ms frames.

Telephone audio after Asterisk is quiet between words (snoop channels send silence
frames all the time), so a level threshold separates speech from silence well enough
to keep the recognizer idle during silence, which is most of a call. A few frames
before the speech (pre-roll) and a hang-over after it are still fed, so onsets are not
clipped and the recognizer sees the trailing silence it needs to end a segment.
"""

from __future__ import annotations

import math

import numpy as np

FULL_SCALE = 32768.0


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    x = samples.astype(np.float32)
    mean = float(np.dot(x, x)) / samples.size
    return 10.0 * math.log10(mean / (FULL_SCALE * FULL_SCALE)) if mean > 0 else float("-inf")


class EnergyVad:
    """Per-stream state: ``frame(level)`` says whether to feed this frame and whether
    the utterance just ended (after ``hangover_frames`` of silence)."""

    def __init__(self, threshold_dbfs: float = -42.0, hangover_frames: int = 40,
                 onset_frames: int = 2) -> None:
        self.threshold = threshold_dbfs
        self.hangover = hangover_frames
        self.onset = onset_frames
        self.in_speech = False
        self._loud = 0
        self._quiet = 0

    def frame(self, level: float) -> tuple[bool, bool, bool]:
        """(feed this frame, speech just started, utterance just ended)."""
        loud = level > self.threshold
        if not self.in_speech:
            self._loud = self._loud + 1 if loud else 0
            if self._loud >= self.onset:
                self.in_speech = True
                self._quiet = 0
                return True, True, False
            return False, False, False
        if loud:
            self._quiet = 0
            return True, False, False
        self._quiet += 1
        if self._quiet >= self.hangover:
            self.in_speech = False
            self._loud = 0
            return True, False, True
        return True, False, False
