"""Burned-in text, checked in the released pixels rather than assumed gone.

Radiographs routinely carry the patient's name and dates burned into a corner. The anonymizer
redraws the whole film, but a partial redraw (strength 0.4-0.6 at 256 px) can leave a name
legible, so every output is read by Tesseract (Debian's `tesseract-ocr`, through pytesseract)
before it may claim Clean Pixel Data:

- at the output's own resolution, and resampled up to the input's (the centred square it came
  from, capped at 4x the output and `max_side` px): small text that Tesseract misses at 256 px is
  read once the letters are a few dozen pixels high;
- burned-in text is the brightest (or, on an inverted film, the darkest) thing on the film:
  each pass keeps the pixels above a fraction of the grey range, as dark letters on white (what
  Tesseract reads best), in sparse-text page segmentation (psm 11: words anywhere, no layout);
- a "word" is at least `min_chars` letters or digits read with confidence >= `min_confidence`:
  anatomy and noise give short, low-confidence fragments. A short word (at most
  `short_word_chars`) also needs `short_word_confidence` or a second reading on another page (the
  other threshold or polarity): Tesseract reads 3-letter words into noise now and then ("bee" at
  72 in one page of a 32-px output upscaled 4x), while burned-in text is saturated and reads the
  same at both thresholds ("DOE" at 92-96 in the films of tests/client/test_ocr.py).

Optionally (`--blank-input-text`) the same reading runs on each input before it is anonymized and
fills the words' boxes with the film's median grey (what Presidio and the RSNA Anonymizer do):
less text for the model to carry over; the output is still checked, that check decides.

Words found are never logged or stored (they may be a name): callers get them only to decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from privdiff_core.errors import PrivdiffError

_GAP = 32  # white rows between the stacked pages one Tesseract call reads
_TIMEOUT_S = 300


class TextCheckUnavailableError(PrivdiffError):
    """Tesseract is not installed or does not run."""


@dataclass(frozen=True)
class BurnedInTextCheck:
    thresholds: tuple[float, ...] = (0.7, 0.8)  # fractions of the grey range kept as "text"
    min_confidence: float = 60.0
    min_chars: int = 3
    short_word_chars: int = 3
    short_word_confidence: float = 85.0
    max_upscale: int = 4
    max_side: int = 1024

    def describe(self) -> str:
        import pytesseract

        return f"tesseract {pytesseract.get_tesseract_version()}"

    def read(self, unit: np.ndarray) -> list[tuple[str, tuple[int, int, int, int]]]:
        """(word, (left, top, width, height)) of every word read in one unit-grey image (both
        polarities, every threshold)."""
        import pytesseract

        image = np.asarray(unit, dtype=np.float32)
        low, high = float(image.min()), float(image.max())
        if high - low < 1e-6:
            return []
        scaled = (image - low) / (high - low)
        # Every (polarity, threshold) page, text black on white, stacked with white gaps into one
        # image: one Tesseract process per image instead of one per page (its start-up dominates).
        pages = [
            np.where(polarity >= fraction, 0, 255).astype(np.uint8)
            for polarity in (scaled, 1.0 - scaled)
            for fraction in self.thresholds
        ]
        height = image.shape[0] + _GAP
        gap = np.full((_GAP, image.shape[1]), 255, np.uint8)
        sheet = np.concatenate([part for page in pages for part in (page, gap)])
        # A bounded read: a Tesseract that hangs raises (that output then fails; it is never released).
        data = pytesseract.image_to_data(
            Image.fromarray(sheet), config="--psm 11", output_type=pytesseract.Output.DICT, timeout=_TIMEOUT_S
        )
        boxes = zip(data["left"], data["top"], data["width"], data["height"], strict=True)
        candidates = []  # (word, letters and digits in it, confidence, page, box in its page)
        for word, confidence, (left, top, width, h) in zip(data["text"], data["conf"], boxes, strict=True):
            letters = sum(c.isalnum() for c in word)
            if letters >= self.min_chars and float(confidence) >= self.min_confidence:
                box = (left, top % height, width, h)
                candidates.append((word, letters, float(confidence), top // height, box))
        pages_of: dict[str, set[int]] = {}
        for word, _, _, page, _ in candidates:
            pages_of.setdefault(word, set()).add(page)
        return [
            (word, box)
            for word, letters, confidence, _, box in candidates
            if letters > self.short_word_chars
            or confidence >= self.short_word_confidence
            or len(pages_of[word]) > 1
        ]

    def words(self, unit: np.ndarray) -> list[str]:
        """Words read in one unit-grey image."""
        return [word for word, _ in self.read(unit)]

    def blank_text(self, unit: np.ndarray, margin: int = 6) -> tuple[np.ndarray, int]:
        """A copy of an input (unit grey) with each word found filled with the film's median grey,
        and how many words that was: what the anonymizer sees no longer spells them."""
        blanked = np.array(unit, dtype=np.float32, copy=True)
        found = self.read(blanked)
        fill = float(np.median(blanked))
        for _, (left, top, width, height) in found:
            blanked[
                max(0, top - margin) : top + height + margin, max(0, left - margin) : left + width + margin
            ] = fill
        return blanked, len(found)

    def __call__(self, output_unit: np.ndarray, input_side: int) -> list[str]:
        """Words found in an output (unit grey, square) at its resolution and at the input's."""
        found = self.words(output_unit)
        size = int(output_unit.shape[0])
        side = min(int(input_side), self.max_upscale * size, self.max_side)
        if side > size:
            grey = Image.fromarray(np.rint(np.clip(output_unit, 0.0, 1.0) * 255).astype(np.uint8))
            upscaled = np.asarray(grey.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32) / 255
            found += self.words(upscaled)
        return found


def burned_in_text_check() -> BurnedInTextCheck:
    """The check, once Tesseract is known to run (a clear error otherwise, before any input)."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except Exception as err:  # noqa: BLE001 -- missing module, missing binary, broken install
        raise TextCheckUnavailableError(
            "the burned-in text check needs Tesseract: `apt-get install tesseract-ocr` (and `pip install "
            f"pytesseract`), or release with --no-text-check, which drops the Clean Pixel Data claim ({err})"
        ) from None
    # No OMP_THREAD_LIMIT here: set in this process's environment it leaked into every process
    # started after the first OCR check (a SuperNode's ClientApp then trained 50x slower).
    return BurnedInTextCheck()
