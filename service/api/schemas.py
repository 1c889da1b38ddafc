"""Request and response bodies of the HTTP API (pydantic; they also make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class ErrorResponse(BaseModel):
    error: str = Field(examples=["source language 'xx' is not supported"])


# ---- LibreTranslate-compatible API --------------------------------------------------------------------------------

class LibreTranslateRequest(BaseModel):
    """POST /translate: a JSON body, a form (application/x-www-form-urlencoded or multipart), the query string,
    or a mix (JSON fields win over the query string's; the query string's win over a form's)."""

    model_config = ConfigDict(extra="ignore")

    q: str | list[str] = Field(description="Text, or list of texts, to translate.")
    source: str = Field(description="Source language code, or `auto` to detect it.", examples=["de"])
    target: str = Field(description="Target language code.", examples=["en"])
    format: Literal["text", "html"] = Field("text", description="`html`: translate text nodes, keep the markup.")
    alternatives: int = Field(0, ge=0, description="Number of alternative translations to return as well.")
    api_key: str | None = Field(None, description="API key, when the service requires keys (the "
                                                  "`Authorization: Bearer` header is the alternative).")


class DetectedLanguage(BaseModel):
    confidence: float = Field(description="0-100, as LibreTranslate reports it.")
    language: str


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = None


class LibreDetectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: str
    api_key: str | None = None


class LanguageEntry(BaseModel):
    code: str
    name: str
    targets: list[str]


class TranslateFileResponse(BaseModel):
    translatedFileUrl: str = Field(description="Where to GET the translated file (until it expires).",
                                   examples=["http://127.0.0.1:8000/download_file/"
                                             "0f3c9a6e2b1d4c8e9a7b6c5d4e3f2a1b.report_en.docx"])


class FrontendLanguage(BaseModel):
    code: str
    name: str


class FrontendLanguages(BaseModel):
    source: FrontendLanguage
    target: FrontendLanguage


class FrontendSettings(BaseModel):
    """GET /frontend/settings, as LibreTranslate's web page reads it."""

    charLimit: int = Field(description="Characters per text (MT_MAX_TEXT_CHARS).")
    frontendTimeout: int = Field(description="Milliseconds a page waits after typing before it translates.")
    apiKeys: bool = Field(description="API keys are configured.")
    keyRequired: bool = Field(description="Translation requests need a key (always so when keys are configured).")
    suggestions: bool = Field(description="POST /suggest accepts suggestions (never: they are off here).")
    filesTranslation: bool = Field(description="POST /translate_file is served (MT_FILES_TRANSLATION).")
    supportedFilesFormat: list[str] = Field(description="File extensions /translate_file accepts.")
    language: FrontendLanguages


class SuggestRequest(BaseModel):
    q: str = Field(description="Original text.")
    s: str = Field(description="Suggested translation.")
    source: str
    target: str


class SuggestResponse(BaseModel):
    success: bool


class LibreHealth(BaseModel):
    status: str = Field(examples=["ok"])


# ---- native API ---------------------------------------------------------------------------------------------------

class TranslateRequest(BaseModel):
    """POST /v1/translate. Strict: unknown fields and values of the wrong JSON type (``"beam_size": "5"``,
    ``"return_scores": 1``) are refused rather than coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(min_length=1, description="Texts to translate; each may hold several sentences.",
                             examples=[["Ein Mann fährt Fahrrad. Zwei Hunde spielen im Schnee."]])
    source: str = Field("auto", description="Source language code, or `auto`.", examples=["de"])
    target: str = Field(description="Target language code.", examples=["en"])
    format: Literal["text", "html"] = "text"
    beam_size: int | None = Field(None, description="1 = greedy; default: the model card's default.")
    n_best: int = Field(1, description="Translations per text (the best plus n_best - 1 alternatives); "
                                       "at most beam_size.")
    return_scores: bool = Field(False, description="Add the score of each text and of each of its sentences.")
    return_attention: bool = Field(False, description="Add the attention matrix of each sentence.")
    return_alignment: bool = Field(False, description="Add the word alignment of each sentence, derived from the "
                                                      "attention (Pharaoh format, with the word lists it indexes).")
    return_confidence: bool = Field(False, description="Add `confidence` to each text and to each of its `sentences`: "
                                                       "the calibrated probability that the translation is good "
                                                       "(sentence chrF >= 50), low for input the model does not know.")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Abstain below this confidence: such a text comes back with `text: null`, `abstained: true` and its "
        "confidence instead of a translation. Default: the service's MT_MIN_CONFIDENCE (off unless set)."))
    glossary: dict[str, str] | None = Field(None, description=(
        "Source term -> the target term that must translate it. Matched case-insensitively on word boundaries, "
        "multi-word terms included, with common inflection endings on the last word (German -e/-n/-en/-er/-es/-s, "
        "English -s/-es); overlapping entries: the longest wins. The target term replaces the words the model "
        "aligned to the source term. At most 100 entries (with do_not_translate), 100 characters per term."),
        examples=[{"Hund": "hound", "Mountainbike": "mountain bike"}])
    do_not_translate: list[str] | None = Field(None, description=(
        "Source spans to copy into the translation verbatim (names, product codes, placeholders such as "
        "`{user}` or `%s`): matched case-insensitively on word boundaries and never split between sentences."),
        examples=[["{user}", "XR-200"]])
    timeout: float | None = Field(None, description="Seconds this request may take (default: the service's).")


class Alternative(BaseModel):
    text: str
    score: float | None = None


class _KeepsNullText(BaseModel):
    """``text`` stays in the JSON when it is null (an abstention), although responses omit other null fields."""

    @model_serializer(mode="wrap")
    def _keep_null_text(self, handler: SerializerFunctionWrapHandler):  # no return type: keeps the JSON schema
        data = handler(self)
        return {name: data.get(name) for name in type(self).model_fields if name in data or name == "text"}


class SentenceScore(_KeepsNullText):
    source: str
    text: str | None = Field(description="None when the text abstained.")
    score: float | None = None
    confidence: float | None = None


class SentenceAttention(BaseModel):
    """One sentence's alignment: ``weights[i][j]`` is the attention of target token i on source token j
    (rows sum to 1). Tokens are SentencePiece pieces; ``</s>`` is the end-of-sentence token."""

    source: str
    text: str
    source_tokens: list[str]
    target_tokens: list[str]
    weights: list[list[float]] = Field(description="len(target_tokens) rows x len(source_tokens) columns.")


class SentenceAlignment(BaseModel):
    """One sentence's word alignment, derived from its attention: attention summed over a source word's pieces
    and averaged over a target word's pieces, then each target word linked to its most attended source word.
    Attention is not a gold alignment: treat the links as the model's focus, not as word correspondences."""

    source: str
    text: str
    source_words: list[str] = Field(description="Source words: a SentencePiece piece starting with ▁ and the pieces "
                                                "after it (</s> excluded). Joined with spaces they give the sentence "
                                                "as the tokenizer normalized it; an unknown character shows as ⁇.",
                                    examples=[["Ein", "Mann", "fährt", "Fahrrad."]])
    target_words: list[str] = Field(description="Target words, defined as source_words are. Joined with spaces they "
                                                "give `text` (up to runs of spaces and the spaces SentencePiece puts "
                                                "around ⁇).", examples=[["A", "man", "rides", "a", "bike."]])
    alignment: str = Field(description="Pharaoh format: space-separated `i-j` pairs, i an index into source_words, "
                                       "j an index into target_words, sorted by i then j. Every target word has "
                                       "exactly one link; a source word may have none or several.",
                           examples=["0-0 1-1 2-2 3-3 3-4"])


class DetectedLanguageNative(BaseModel):
    language: str
    confidence: float = Field(description="Probability among the served source languages, 0-1.")


class TranslationItem(_KeepsNullText):
    text: str | None = Field(description="The translation; None when the service abstained (see `abstained`).")
    model: str | None = Field(description="Model that translated it (None when nothing needed translating "
                                          "and no model was resolved).")
    source_language: str
    detected_language: DetectedLanguageNative | None = None
    score: float | None = Field(None, description="Mean of the sentences' length-normalized log-probabilities.")
    confidence: float | None = Field(None, description="Calibrated probability that the translation is good: the "
                                                       "lowest of its sentences' (a text is as good as its worst "
                                                       "sentence). Absent when nothing was translated.")
    abstained: bool | None = Field(None, description="True when the confidence was below min_confidence and the "
                                                     "translation was withheld.")
    alternatives: list[Alternative] | None = None
    sentences: list[SentenceScore] | None = None
    attention: list[SentenceAttention] | None = Field(None, description="One alignment per translated sentence, "
                                                                        "in order; with glossary or do-not-translate "
                                                                        "terms, of the model's output before they "
                                                                        "were put in place.")
    alignment: list[SentenceAlignment] | None = Field(None, description="One word alignment per translated "
                                                                        "sentence, in order (best translation; "
                                                                        "like `attention`, the model's output).")


class Timing(BaseModel):
    queue_ms: float
    inference_ms: float


class TranslateResponse(BaseModel):
    model: str | None = Field(description="The model used, when every text used the same one.")
    translations: list[TranslationItem]
    timing: Timing


class HealthResponse(BaseModel):
    status: str
    models: list[str] = []
    broken_models: dict[str, str] = {}
    error: str | None = None
