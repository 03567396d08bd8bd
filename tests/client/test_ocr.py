"""The burned-in text check on real films: a name and date drawn into a real CR (MONOCHROME2 and
MONOCHROME1) are found after the resampling a partial redraw leaves, the clean films read as
text-free, and a release quarantines what still shows text and claims Clean Pixel Data only for
outputs that passed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from phi_dicom import REAL, with_burned_in_text

from privdiff.client.ocr import BurnedInTextCheck, burned_in_text_check
from privdiff_core.data import read_dicom_pixels
from privdiff_core.data.grey import square_resize

FILMS = ("rsna_cr_jpeg_baseline.dcm", "rsna_cr_jpeg_baseline_monochrome1.dcm")
NOISE_READ_AS_A_WORD = Path(__file__).parents[1] / "fixtures" / "ocr" / "tiny_model_output_read_as_bee.npy"


@pytest.fixture(scope="module")
def check() -> BurnedInTextCheck:
    return burned_in_text_check()


@pytest.mark.parametrize("film", FILMS)
def test_text_burned_into_a_real_film_is_found_at_the_anonymizers_resolution(film, check, tmp_path):
    path = with_burned_in_text(film, tmp_path, flagged=False)
    grey = read_dicom_pixels(path)
    at_256 = square_resize(grey, 256)  # what an output that redrew nothing would hold
    found = check(at_256, input_side=grey.shape[0])
    assert {"DOE", "JOHN", "2019", "12/03/2019"} & set(found), found


@pytest.mark.parametrize("film", FILMS)
def test_clean_real_films_read_as_text_free(film, check):
    grey = read_dicom_pixels(REAL / film)
    for size in (32, 256):
        assert check(square_resize(grey, size), input_side=grey.shape[0]) == []


def test_a_short_word_read_once_in_noise_is_not_text(check):
    """A real 32-px output (no text in it) in which Tesseract reads "bee" at confidence 72, on one
    page only: counted, it quarantined the output; a short word needs 85 or a second reading."""
    output = np.load(NOISE_READ_AS_A_WORD)
    without_the_rule = BurnedInTextCheck(short_word_confidence=0.0)
    assert without_the_rule(output, input_side=1024) == ["bee"]  # the fixture still provokes Tesseract
    assert check(output, input_side=1024) == []


def test_a_blank_image_has_no_text(check):
    assert check(np.zeros((64, 64), np.float32), input_side=1024) == []


@pytest.mark.slow
@pytest.mark.parametrize("film", FILMS)
def test_blanking_the_input_hides_the_words_from_the_anonymizer(film, check, tmp_path):
    from privdiff.client.deid import Deidentifier, UIDMapper
    from privdiff.client.intake import InputFile, Intake

    secret = b"ocr blanking test secret 0123456"
    path = with_burned_in_text(film, tmp_path, flagged=True)

    def model_input(**kwargs):
        intake = Intake(256, secret, Deidentifier(UIDMapper(secret)), set(), clean_burned_in=True, **kwargs)
        prepared = intake(InputFile(path, "ref"))
        return (prepared.image + 1) / 2, prepared.square_side

    assert check(*model_input())  # an anonymizer that redrew nothing would leave these words
    assert check(*model_input(blank_text=check)) == []


def test_missing_tesseract_is_a_clear_error(monkeypatch):
    import pytesseract

    from privdiff.client.ocr import TextCheckUnavailableError

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(TextCheckUnavailableError, match="apt-get install tesseract-ocr"):
        burned_in_text_check()
