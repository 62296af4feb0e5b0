"""Jira project keys and names that never collide: a readable one, then ones only a run makes."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from shared.errors import PermanentError

KEY_TAKEN = "project_key_taken"
NAME_TAKEN = "project_name_taken"

MIN_KEY = 2
MAX_KEY = 10
MIN_NAME = 2
MAX_NAME = 80
JIRA_KEY = re.compile(r"[A-Z][A-Z0-9]{1,9}")  # MIN_KEY to MAX_KEY
# When nothing readable is left (東京.jp, an emoji for a name).
FALLBACK_KEY = "CLIENT"
NAME_SUFFIX = " onboarding"

# Suffix lengths of the run-specific keys, in the order they are tried: the first keeps six
# readable letters; each later one trades a letter for a far smaller chance of being taken.
KEY_SUFFIXES = (4, 5, 6, 6, 7, 7, 8, 8)
NAME_TAGS = (8, 12)
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Jira refuses Windows device names as keys (attachments live in folders named after them), and
# a key that is a JQL reserved word breaks every unquoted `project = KEY` in other tools.
_DEVICE_NAMES = {"AUX", "CON", "NUL", "PRN"}
_DEVICE_NAMES |= {f"{d}{n}" for d in ("COM", "LPT") for n in range(10)}
_JQL_RESERVED = set(
    """abort access add after alias all alter and any as asc audit avg before begin between
    boolean break by byte catch cf changed char character check checkpoint collate collation
    column commit connect continue count create current date decimal declare decrement default
    defaults define delete delimiter desc difference distinct divide do double drop else empty
    encoding end equals escape exclusive exec execute exists explain false fetch file field
    first float for from function go goto grant greater group having identified if immediate in
    increment index initial inner inout input insert int integer intersect intersection into is
    isempty isnull join last left less like limit lock long max min minus mode modify modulo
    more multiply next noaudit not notin nowait null number object of on option or order outer
    output power previous prior privileges public raise raw remainder rename resource return
    returns revoke right row rowid rownum rows select session set share size sqrt start strict
    string subtract sum synonym table then to trans transaction trigger true uid union unique
    update user validate values view was when whenever where while with""".upper().split()
)
RESERVED_KEYS = frozenset(_DEVICE_NAMES | _JQL_RESERVED)

# Second-level labels under which the registrable name sits (acme.co.uk, acme.com.au).
_GENERIC_SLD = {"ac", "co", "com", "edu", "gov", "ltd", "ne", "net", "or", "org", "plc"}
# Subdomain labels that say where or what, not who (eu.shop.acme.co.uk is Acme).
GENERIC_LABELS = frozenset(
    {"www", "www2", "m", "app", "apps", "api", "web", "shop", "store", "portal", "my", "online"}
    | {"eu", "us", "uk", "de", "fr", "es", "it", "nl", "jp", "cn", "in", "au", "ca", "br"}
    | {"asia", "emea", "apac", "latam", "global", "intl", "int", "en", "corp", "group", "home"}
    # Hosting platforms whose customers are the subdomain (acme.myshopify.com is Acme).
    | {"myshopify", "herokuapp", "azurewebsites", "appspot", "github", "gitlab", "netlify"}
    | {"vercel", "wordpress", "blogspot", "wixsite", "squarespace", "webflow", "pages"}
)
# Words a company name ends with that say what kind of company, not which.
LEGAL_FORMS = frozenset(
    ("ab ag as bv co corp gmbh inc kg kk llc llp ltd nv oy plc pty sa sarl sas sl spa srl")
    .upper()
    .split()
)
# Letters NFKD does not take apart.
_LATIN = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l"}
    | {"Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ı": "i"}
)


# Control characters and separators read as a space in a name; format characters (the joiner
# inside a family emoji) stay.
_BLANK = {"Cc", "Zs", "Zl", "Zp"}


class ProjectTaken(PermanentError):
    """Jira refused the project: its key, its name or both already belong to a project."""

    def __init__(self, message: str, *, key_taken: bool, name_taken: bool) -> None:
        super().__init__(message, code=KEY_TAKEN if key_taken else NAME_TAKEN)
        self.key_taken = key_taken
        self.name_taken = name_taken


def ascii_letters(text: str) -> str:
    """The text in A-Z and 0-9 only, Unicode transliterated where it can be (Zürich: ZURICH)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LATIN))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^A-Z0-9]", "", plain.upper())


def as_key(text: str) -> str:
    """Any text as a Jira key (2-10 capitals and digits, a letter first, not reserved), or ""
    when it holds nothing readable."""
    letters = ascii_letters(text)
    if not letters:
        return ""
    if not letters[0].isalpha():
        letters = "X" + letters
    key = letters[:MAX_KEY].ljust(MIN_KEY, "X")
    while key in RESERVED_KEYS:
        key = (key if len(key) < MAX_KEY else key[:-1]) + "X"
    return key


def meaningful_label(domain: str) -> str:
    """The label of the domain that names the client: the registrable name (acme in
    eu.shop.acme.co.uk), else the nearest subdomain label that is not generic. Punycode labels
    are decoded (xn--mnchen-3ya: münchen)."""
    labels = [_decoded(label) for label in domain.lower().strip(".").split(".") if label]
    if len(labels) > 1:
        labels = labels[:-1]  # the TLD
    if len(labels) > 1 and labels[-1] in _GENERIC_SLD:
        labels = labels[:-1]
    registrable, subdomains = labels[-1] if labels else "", labels[:-1]
    for label in [registrable, *reversed(subdomains)]:
        if label not in GENERIC_LABELS and len(ascii_letters(label)) >= MIN_KEY:
            return label
    return registrable


def readable_key(domain: str, company_name: str = "") -> str:
    """The plain key a client's project is tried under first: from the domain's meaningful
    label (acme.co.uk: ACME), else the company name's initials (Initech Software Holdings: ISH)
    or letters (Zed: ZED), else FALLBACK_KEY."""
    label = ascii_letters(meaningful_label(domain))
    if len(label) >= MIN_KEY:
        return as_key(label)
    words = [ascii_letters(w) for w in re.split(r"[\s\-_&/+,]+", company_name)]
    words = [w for w in words if w and w not in LEGAL_FORMS]  # Initech ... Holdings GmbH: ISH
    initials = "".join(w[0] for w in words)
    if len(words) > 1 and len(initials) >= MIN_KEY:
        return as_key(initials)
    return as_key("".join(words)) or FALLBACK_KEY


def plain_key(proposed: object, fallback: str) -> str:
    """A proposed key (the plan's, or the model's) normalised; `fallback` when nothing of it
    is readable."""
    return (as_key(proposed) if isinstance(proposed, str) else "") or as_key(fallback)


def candidate_keys(key: str, run_id: str) -> list[str]:
    """The keys a run tries, in order: the plain key, then keys only this run makes.

    The same on every attempt of a run (so a retry finds its own project), and different between
    runs from the second on: each is a prefix of the plain key and a base-36 suffix hashed from
    the run id, so clients sharing a prefix do not walk the same sequence.
    """
    plain = as_key(key) or FALLBACK_KEY
    keys = [plain]
    for number, length in enumerate(KEY_SUFFIXES, start=1):
        candidate = plain[: MAX_KEY - length] + _digest(f"key:{run_id}:{number}", length)
        if candidate not in keys and candidate not in RESERVED_KEYS:
            keys.append(candidate)
    return keys


def readable_name(company_name: str) -> str:
    """The plain project name: "<company> onboarding", the company cut to fit Jira's limit."""
    company = _clean(company_name) or "Client"
    return _cut(company, MAX_NAME - _utf16_len(NAME_SUFFIX)) + NAME_SUFFIX


def plain_name(proposed: object, fallback: str) -> str:
    """A proposed project name, whitespace tidied and cut to Jira's limit; `fallback` (a
    company name) made into the readable name when nothing of it is left."""
    name = _cut(_clean(proposed), MAX_NAME)
    return name if _utf16_len(name) >= MIN_NAME else readable_name(fallback)


def candidate_names(name: str, run_id: str) -> list[str]:
    """The names a run tries, in order: the plain name, then the name tagged with a base-36
    hash of the run id ("Acme onboarding (K3F9QZ2A)"), for when Jira says the name is taken."""
    plain = plain_name(name, name)
    names = [plain]
    for number, length in enumerate(NAME_TAGS, start=1):
        tag = f" ({_digest(f'name:{run_id}:{number}', length)})"
        names.append(_cut(plain, MAX_NAME - len(tag)).rstrip() + tag)
    return names


def valid_key(key: str) -> bool:
    """Whether Jira takes `key` as a project key (and no tool trips over it in JQL)."""
    return bool(JIRA_KEY.fullmatch(key)) and key not in RESERVED_KEYS


def _digest(seed: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    return "".join(digits)


def _decoded(label: str) -> str:
    if label.startswith("xn--"):
        try:
            return label.encode("ascii").decode("idna")
        except UnicodeError:
            return label.removeprefix("xn--")
    return label


def _clean(text: object) -> str:
    """Printable text on one line: control characters out, runs of whitespace as one space."""
    if not isinstance(text, str):
        return ""
    printable = "".join(" " if unicodedata.category(c) in _BLANK else c for c in text)
    return " ".join(printable.split())


def _utf16_len(text: str) -> int:
    # Jira counts a name's length in Java chars: an emoji outside the BMP is two of them.
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units, never inside a character or between a letter and
    its accents."""
    text = unicodedata.normalize("NFC", text)
    if _utf16_len(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for char in text:
        width = _utf16_len(char)
        if used + width > limit:
            if unicodedata.combining(char):
                # The mark belongs to the last letter kept: drop the letter and its marks.
                while kept and unicodedata.combining(kept[-1]):
                    kept.pop()
                if kept:
                    kept.pop()
            break
        kept.append(char)
        used += width
    return "".join(kept).rstrip()
