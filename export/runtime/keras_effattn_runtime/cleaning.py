"""Text cleaning: HTML removed, Unicode, punctuation and whitespace normalised; stop words optional.

Case is kept: lowercasing belongs to the tokenizer (an uncased WordPiece vocabulary lowercases
itself, a cased one must see the original case). Cleaning is deterministic and idempotent on
text without doubly escaped HTML entities: `clean_text(clean_text(t)) == clean_text(t)`.
"""

import html
import re
import unicodedata

# A classic English stop-word list (the NLTK / Snowball set) WITHOUT negations and negative
# contractions ("not", "no", "nor", "don't", ...): dropping those flips sentiment ("not good"),
# so a sentiment classifier must keep them. Contractions are listed whole ("it's") and by their
# tails ("s", "ll", "ve") for text tokenised as "it 's"; the "t" of "n't" is kept on purpose.
NEGATIONS = frozenset(
    """no nor not never don't doesn't didn't isn't aren't wasn't weren't hasn't haven't hadn't
    won't wouldn't shouldn't couldn't can't cannot mustn't needn't mightn't shan't ain't""".split()  # noqa: SIM905
)
ENGLISH_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he he'd he'll he's her here here's hers herself him himself his
    how how's i i'd i'll i'm i've if in into is it it's its itself just let's me more most my
    myself now of off on once only or other ought our ours ourselves out over own same she she'd
    she'll she's should so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up
    very was we we'd we'll we're we've were what what's when when's where where's which while who
    who's whom why why's will with would you you'd you'll you're you've your yours yourself
    yourselves s d ll m o re ve y""".split()  # noqa: SIM905
)

# An HTML/XML tag: `<br />`, `<br>`, `</i>`, `<a href="...">`. A bare "<" in prose ("a < b")
# does not match because a tag name must follow it directly.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
# Typographic quotes, dashes and odd spaces mapped to plain ASCII.
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": " - ",
        "\u2015": " - ",
        "\u2212": "-",
        "\u00ad": None,
        "\u200b": None,
        "\ufeff": None,
    }
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Runs of the same mark: "!!!" -> "!", "???" -> "?", "...." -> "...", ",," -> ",", "--" -> "-".
_REPEAT_MARK = re.compile(r"([!?,;:*~=_\-])\1+")
_DOTS = re.compile(r"\.{3,}")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def clean_text(text, remove_stopwords=False, stop_words=None):
    """Cleans one text for a Transformer tokenizer.

    Steps, in order: HTML entities unescaped (`&amp;` -> `&`); HTML tags such as `<br />`
    replaced by a space; Unicode NFKC normalisation (full-width letters, ligatures, `…` ->
    `...`); typographic quotes and dashes mapped to ASCII; control characters removed; runs of
    a repeated punctuation mark collapsed (`!!!` -> `!`, `.....` -> `...`); whitespace collapsed
    to single spaces and stripped; optionally, stop words removed (case-insensitive, whole
    words only). Case is kept.

    Args:
        text: `str` to clean.
        remove_stopwords: bool, default `False`. Drop the words in `stop_words`.
        stop_words: iterable of lowercase words, default `ENGLISH_STOP_WORDS` (which keeps
            negations, see `NEGATIONS`).

    Returns:
        The cleaned `str` (empty if nothing but markup or stop words was left).

    Example:
    >>> clean_text("A <i>great</i> film!!!<br /><br />Loved it&hellip;")
    'A great film! Loved it...'
    >>> clean_text("This is not a good film", remove_stopwords=True)
    'not good film'
    """
    if not isinstance(text, str):
        raise ValueError(
            f"clean_text expects a str, got {type(text).__name__}; decode bytes with "
            "bytes.decode('utf-8') first."
        )
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_TRANSLATE)
    text = _CONTROL.sub(" ", text)
    text = _DOTS.sub("...", text)
    text = _REPEAT_MARK.sub(r"\1", text)
    if remove_stopwords:
        words = (
            ENGLISH_STOP_WORDS if stop_words is None else frozenset(w.lower() for w in stop_words)
        )
        text = _WORD.sub(lambda m: " " if m.group(0).lower() in words else m.group(0), text)
    return _SPACES.sub(" ", text).strip()


def clean_texts(texts, remove_stopwords=False, stop_words=None):
    """`clean_text` over a list of texts; returns a new list."""
    return [clean_text(t, remove_stopwords=remove_stopwords, stop_words=stop_words) for t in texts]
