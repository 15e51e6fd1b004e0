"""The local variables of an exception's frames, as PostHog error tracking shows them.

PostHog shows, next to each frame of a stack trace, the values its local variables held
when the exception went through it: the ``code_variables`` of each frame of
``$exception_list``. :func:`take_variables` makes them in the shape the official Python
SDK (posthog-python 7.x) sends, under its masking rules, so that the same variables are
shown, and the same ones hidden, whichever library sent the event: finite numbers as
numbers, everything else as text (containers and objects as JSON text), the marker
:data:`REDACTED` for what looks secret and :data:`TOO_LONG` for what is too big to vouch
for.

Why it is done here, and bounded:

- **On the caller's thread.** A frame is live: its locals change as soon as the code goes
  on, and keeping it would keep every object it refers to. So the values are read where
  the exception is caught and turned into plain numbers and text at once; nothing of a
  frame outlives the call.
- **Bounded in size.** That thread is the application's, so every value is read under
  limits: at most 50 items of a collection (read with :func:`itertools.islice`: a list of
  ten million items costs 51 steps, where its ``repr`` would cost them all), 12 levels of
  nesting, 100 containers or objects per variable, 2,048 characters of text to
  inspect, 1,024 characters per value sent, and one byte budget (10 KiB) for the whole
  event.
- **Bounded in time.** Limits on size do not bound time: a ``__repr__`` or an ``__iter__``
  is the application's code. So each call has a deadline (10 ms of wall time by default),
  checked before each variable and at each node of a value; once it has passed no more is
  taken. What cannot be bounded is one ``__repr__`` (or ``__iter__`` step) of the
  application's once called: it runs to its end.
- **Secrets stay out.** A variable or key whose name looks secret (the SDK's patterns,
  and the names the client's ``redact_keys`` filters) is sent as the marker, its value
  never read; text that looks like a key or a token, and passwords in URLs, are masked.
- **Never raises.** A frame or a variable that fails to read is left out.

Where the output differs from the SDK's, it is on purpose: sets, deques and dict views
are read as lists (the SDK takes their ``repr``, whatever their size); an enum member is
``"Type.NAME"``; only a real cycle is ``"<circular ref>"`` (the SDK marks any object met
twice); and JSON text is compact.
"""

from __future__ import annotations

import array
import base64
import binascii
import dataclasses
import enum
import itertools
import logging
import math
import re
import types
from collections import Counter, deque
from collections.abc import ItemsView, Iterable, KeysView, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from posthog_logging.serialisation import Redactor, dumps

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "DEFAULT_MASK_PATTERNS",
    "REDACTED",
    "TOO_LONG",
    "VariableRules",
    "take_variables",
]

#: Sent in place of a value that looks secret, or whose name does.
REDACTED = "$$_posthog_redacted_based_on_masking_rules_$$"
#: Sent in place of a value too big to inspect within the limits.
TOO_LONG = "$$_posthog_value_too_long_$$"

#: The official SDK's patterns for secret-looking names (and text). ``(?i)word`` is a
#: case-insensitive substring check, done without a regular expression.
DEFAULT_MASK_PATTERNS: tuple[str, ...] = (
    r"(?i)password",
    r"(?i)secret",
    r"(?i)passwd",
    r"(?i)pwd",
    r"(?i)api_key",
    r"(?i)apikey",
    r"(?i)auth",
    r"(?i)credentials",
    r"(?i)privatekey",
    r"(?i)private_key",
    r"(?i)token",
    r"(?i)aws_access_key_id",
    r"(?i)_pass",
    r"(?i)sk_",
    r"(?i)jwt",
    r"(?i)connection_string",
    r"(?i)connectionstring",
    r"(?i)conn_str",
    r"(?i)connstr",
    r"(?i)dsn",
    # The signature of a signed URL (Azure SAS, say), as a query parameter only: the
    # bare word "sig" is in too many ordinary names.
    r"(?i)[?&]sig=",
)
#: Names left out altogether: dunders (``__builtins__``, ``__file__``, ...).
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (r"^__.*",)

_logger = logging.getLogger("posthog_logging")

#: Text longer than this is not scanned: a string becomes TOO_LONG, a repr REDACTED.
_MAX_TEXT_TO_SCAN = 2_048
_MAX_ITEMS = 50
_MAX_DEPTH = 12
_MAX_NODES = 100
_CIRCULAR = "<circular ref>"
#: Integers in this range are sent as numbers (what JSON encoders take: int64, uint64).
_INT_MIN = -(2**63)
_INT_END = 2**64
#: Names (of variables, of keys) the rules remember their verdict on, as names repeat
#: from event to event; longer ones are checked each time.
_MAX_KNOWN_NAMES = 4096
_MAX_NAME_TO_KEEP = 128

# A name's verdict: send its value, leave it out, or send REDACTED without reading it.
_TAKE, _IGNORE, _MASK = 0, 1, 2

_REGEX_METACHARACTERS = frozenset(r"\.^$*+?{}[]|()")
_CASELESS_FLAGS = re.compile(r"^\(\?[aiLmsux]*i[aiLmsux]*\)")
_URL_CREDENTIALS_RE = re.compile(
    r"([a-z][a-z0-9+.\-]{0,30}://)(?=[^/@\s]*:)[^/\s]*@", re.IGNORECASE
)
_URL_CREDENTIALS_REPLACEMENT = r"\g<1>" + REDACTED + "@"
#: The credential of an HTTP ``Authorization`` value (``Bearer <token>``, ``Basic
#: <base64>``), which a list of header pairs or an ASGI scope holds apart from the
#: header's name, out of reach of the name patterns. The scheme must be followed by a
#: separator (spaces, or a colon), so that ``basicConfig`` is left alone.
_AUTHORIZATION_RE = re.compile(
    r"\b(bearer|basic)((?:\s*:\s*|\s+)['\"]?)([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE
)
#: Shorter credentials, and lowercase words up to 15 letters ("the bearer of", "basic
#: income"), are prose; a ``Basic`` value that decodes to ``user:password`` never is.
_MIN_CREDENTIAL_LENGTH = 8
_MAX_PROSE_WORD_LENGTH = 15


def _masked_credential(match: re.Match[str]) -> str:
    scheme, separator, credential = match.group(1), match.group(2), match.group(3)
    if not (scheme.lower() == "basic" and _is_user_password(credential)) and (
        len(credential) < _MIN_CREDENTIAL_LENGTH
        or (
            len(credential) <= _MAX_PROSE_WORD_LENGTH
            and credential.isalpha()
            and credential.islower()
        )
    ):
        return match.group(0)
    return scheme + separator + REDACTED


def _is_user_password(credential: str) -> bool:
    try:
        return ":" in base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False


#: A key that names a secret is kept when it looks like a field name; other text (such as
#: ``"password=hunter2"``) may hold the secret itself, and is replaced.
_FIELD_NAME_RE = re.compile(r"[\w.\-]+")
_HIDDEN_KEY = "$$_posthog_redacted_key_{}_$$"
#: What a key inside a value is (see ``VariableRules._key_kind``).
_KEY_PLAIN, _KEY_SECRET_NAME, _KEY_SECRET_TEXT, _KEY_URL = range(4)


# -- patterns ---------------------------------------------------------------------------


class _Matcher:
    """A compiled pattern list: ``(?i)literal`` patterns as lowercase substrings, ``^literal``
    (or ``^literal.*``) as prefixes, the rest as regular expressions (``search``)."""

    __slots__ = ("literals", "prefixes", "regexes")

    def __init__(self, patterns: Iterable[object], invalid: list[str]) -> None:
        literals: list[str] = []
        prefixes: list[str] = []
        regexes: list[re.Pattern[str]] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                invalid.append(repr(pattern))
                continue
            flags = _CASELESS_FLAGS.match(pattern)
            rest = pattern[flags.end() :] if flags else ""
            if rest and _REGEX_METACHARACTERS.isdisjoint(rest):
                literals.append(rest.lower())
                continue
            rest = pattern[1:-2] if pattern.endswith(".*") else pattern[1:]
            if pattern.startswith("^") and rest and _REGEX_METACHARACTERS.isdisjoint(rest):
                prefixes.append(rest)
                continue
            try:
                regexes.append(re.compile(pattern))
            except (re.error, RecursionError, OverflowError, ValueError):
                invalid.append(repr(pattern))
        self.literals = tuple(dict.fromkeys(literals))
        self.prefixes = tuple(dict.fromkeys(prefixes))
        self.regexes = tuple(regexes)

    def __bool__(self) -> bool:
        return bool(self.literals or self.prefixes or self.regexes)

    def __call__(self, text: str) -> bool:
        if self.literals:
            lowered = text.lower()
            for literal in self.literals:
                if literal in lowered:
                    return True
        if self.prefixes and text.startswith(self.prefixes):
            return True
        # (the generator only when there are expressions: most lists have none)
        return bool(self.regexes) and any(regex.search(text) for regex in self.regexes)


def _as_patterns(patterns: Iterable[str], option: str) -> tuple[str, ...]:
    if isinstance(patterns, str):
        raise TypeError(f"{option} must be a list of patterns, not a single string")
    return tuple(patterns)


@dataclass(frozen=True)
class VariableRules:
    """What to take of frames' locals and how to mask it.

    A pattern list given replaces the defaults (add to :data:`DEFAULT_MASK_PATTERNS` to
    keep them). A pattern that is not a valid regular expression is left out, with one
    warning on the ``posthog_logging`` logger. Rules compile their patterns once: make
    them once and reuse them.
    """

    #: Names (of variables and of keys and attributes inside values) whose values are
    #: sent as :data:`REDACTED`; text containing them is, too.
    mask_patterns: tuple[str, ...] = DEFAULT_MASK_PATTERNS
    #: Variable names left out.
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE_PATTERNS
    #: ``scheme://user:password@host``: the ``user:password`` part masked.
    mask_url_credentials: bool = True
    #: Text that looks like a key or a token (by its shape and entropy, or a known
    #: vendor prefix) sent as :data:`REDACTED`.
    detect_secrets: bool = True
    #: Characters per value; a longer one is cut and ends with ``"..."``.
    max_value_length: int = 1024
    #: Characters of values for the whole event (all frames): a frame stops at the first
    #: variable that does not fit.
    max_event_bytes: int = 10 * 1024
    #: Seconds of wall time for the whole event; past it, no more variables are taken.
    time_budget: float = 0.010
    #: The client's ``redact_keys``: names it calls secret are masked too.
    redactor: Redactor | None = None

    _mask: _Matcher = field(init=False, repr=False, compare=False)
    _ignore: _Matcher = field(init=False, repr=False, compare=False)
    _names: dict[str, int] = field(init=False, repr=False, compare=False)
    _secret_names: dict[str, bool] = field(init=False, repr=False, compare=False)
    _keys: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mask = _as_patterns(self.mask_patterns, "mask_patterns")
        ignore = _as_patterns(self.ignore_patterns, "ignore_patterns")
        object.__setattr__(self, "mask_patterns", mask)
        object.__setattr__(self, "ignore_patterns", ignore)
        invalid: list[str] = []
        object.__setattr__(self, "_mask", _Matcher(mask, invalid))
        object.__setattr__(self, "_ignore", _Matcher(ignore, invalid))
        object.__setattr__(self, "_names", {})
        object.__setattr__(self, "_secret_names", {})
        object.__setattr__(self, "_keys", {})
        if invalid:
            _logger.warning(
                "code variables: left out %d pattern(s) that are not valid regular expressions: %s",
                len(invalid),
                ", ".join(invalid),
            )

    def _verdict(self, name: str) -> int:
        """Take, ignore or mask the variable ``name``: remembered, as names repeat."""
        verdict = self._names.get(name)
        if verdict is None:
            if self._ignore(name):
                verdict = _IGNORE
            elif self._secret_name(name):
                verdict = _MASK
            else:
                verdict = _TAKE
            if len(self._names) < _MAX_KNOWN_NAMES and len(name) <= _MAX_NAME_TO_KEEP:
                self._names[name] = verdict
        return verdict

    def _secret_name(self, name: str) -> bool:
        """Whether values under ``name`` (a variable's, a key's) are REDACTED: remembered,
        as the keys of values repeat too."""
        secret = self._secret_names.get(name)
        if secret is None:
            redactor = self.redactor
            secret = self._mask(name) or (redactor is not None and redactor.is_secret(name))
            if len(self._secret_names) < _MAX_KNOWN_NAMES and len(name) <= _MAX_NAME_TO_KEEP:
                self._secret_names[name] = secret
        return secret

    def _key_kind(self, key: str) -> int:
        """What a key inside a value is (a secret name, secret-looking text, a URL, or
        plain): remembered, as the keys of objects and dicts repeat."""
        kind = self._keys.get(key)
        if kind is None:
            if self._secret_name(key):
                kind = _KEY_SECRET_NAME
            elif self.detect_secrets and _looks_like_secret(key):
                kind = _KEY_SECRET_TEXT
            elif self.mask_url_credentials and "://" in key:
                kind = _KEY_URL
            else:
                kind = _KEY_PLAIN
            if len(self._keys) < _MAX_KNOWN_NAMES and len(key) <= _MAX_NAME_TO_KEEP:
                self._keys[key] = kind
        return kind

    def _mask_text(self, text: str) -> str:
        """A string value as it is sent: TOO_LONG to scan, REDACTED when it matches a
        mask pattern or looks secret, else itself with URL credentials masked. (Not
        remembered, unlike names: values are the application's data, and a cache would
        keep them past their life.)"""
        if len(text) > _MAX_TEXT_TO_SCAN:
            return TOO_LONG
        if self._mask(text) or (self.detect_secrets and _looks_like_secret(text)):
            return REDACTED
        if self.mask_url_credentials and "://" in text:
            # URLs first: a credential pass could take a URL's scheme for its token.
            text = _URL_CREDENTIALS_RE.sub(_URL_CREDENTIALS_REPLACEMENT, text)
        return _AUTHORIZATION_RE.sub(_masked_credential, text)


# -- secret-looking text ----------------------------------------------------------------
# The official SDK's last-resort check, after the name patterns: long, varied,
# high-entropy text that is not prose, a path, a URL, a UUID, a hex digest or a repr; or
# a well-known credential format. Hex-only text is taken for an id or a digest, so a
# hex-encoded secret gets through.

_SECRET_MIN_LENGTH = 16
_SECRET_MIN_ENTROPY_BITS = 3.8
_SECRET_MIN_CHAR_CLASSES = 3
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# Punctuation of reprs and structured text, never of a bare token.
_SECRET_REJECT_CHARS = frozenset("()[]{}<>'\"`,;")
_UUID_RE = re.compile(
    r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
# A lowercase word: two of them around a "/" make a path.
_PATH_WORD_RE = re.compile(r"\A[a-z][a-z.]*\Z")
_PEM_PRIVATE_KEY_MARKER = "PRIVATE KEY-----"
# Known credential formats, matched whatever their entropy (from the official SDK, after
# the gitleaks and detect-secrets rules).
_KNOWN_SECRET_RE = re.compile(
    "|".join(
        (
            r"sk-ant-[A-Za-z0-9_-]{16,}",  # Anthropic
            r"sk-(?:proj-)?[A-Za-z0-9_-]{20,}",  # OpenAI
            r"hf_[A-Za-z0-9]{34}",  # Hugging Face
            r"AKIA[0-9A-Z]{16}",  # AWS access key id
            r"(?:ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[0-9A-Z]{16}",  # other AWS ids
            r"AIza[A-Za-z0-9_-]{35}",  # Google API key
            r"ya29\.[A-Za-z0-9_-]{20,}",  # Google OAuth token
            r"do[opr]_v1_[a-f0-9]{64}",  # DigitalOcean
            r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
            r"sq0[a-z]{3}-[A-Za-z0-9_-]{22,43}",  # Square
            r"gh[pousr]_[A-Za-z0-9]{36}",  # GitHub
            r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained token
            r"gl(?:pat|ptt|rt|soat)-[A-Za-z0-9_-]{20}",  # GitLab
            r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}",  # Grafana service account
            r"xox[abeoprs]-[A-Za-z0-9-]{10,}",  # Slack
            r"xapp-[0-9]-[A-Za-z0-9-]{10,}",  # Slack app-level
            r"SK[0-9a-fA-F]{32}",  # Twilio
            r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",  # SendGrid
            r"key-[0-9a-f]{32}",  # Mailgun
            r"[0-9a-f]{32}-us[0-9]{1,2}",  # Mailchimp
            r"npm_[A-Za-z0-9]{36}",  # npm
            r"pypi-AgEI[A-Za-z0-9_-]{50,}",  # PyPI upload token
            r"dapi[0-9a-f]{32}",  # Databricks
            r"dp\.pt\.[A-Za-z0-9]{40,}",  # Doppler
            r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}",  # Postman
            r"lin_api_[A-Za-z0-9]{40}",  # Linear
            r"ntn_[A-Za-z0-9]{40,}",  # Notion
            r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",  # Shopify
            r"NR(?:AK|JS|II|MA|RA)-[A-Za-z0-9]{27}",  # New Relic
            r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{6,}",  # JWT
        )
    )
)

# The shortest text any of the formats above matches (a Slack token), none of which holds
# whitespace: text is scanned word by word, and prose (short words) costs a split.
_KNOWN_SECRET_MIN_LENGTH = 15


def _is_known_secret(text: str) -> bool:
    search = _KNOWN_SECRET_RE.search
    if " " not in text:
        return search(text) is not None
    words = [word for word in text.split() if len(word) >= _KNOWN_SECRET_MIN_LENGTH]
    return any(search(word) for word in words)


def _looks_like_path_or_url(text: str) -> bool:
    if "://" in text or "\\" in text:
        return True
    if "/" in text:
        words = 0
        for segment in text.split("/"):
            if segment and _PATH_WORD_RE.match(segment):
                words += 1
                if words >= 2:
                    return True
    return False


def _char_classes(distinct: Iterable[str]) -> int:
    """How many of lower, upper, digit, symbol: 0 for whitespace and hex-only text."""
    lower = upper = digit = symbol = False
    hex_only = True
    for ch in distinct:
        if ch.isspace():
            return 0
        if ch.islower():
            lower = True
            hex_only = hex_only and ch in _HEX_DIGITS
        elif ch.isupper():
            upper = True
            hex_only = hex_only and ch in _HEX_DIGITS
        elif ch.isdigit():
            digit = True
        else:
            symbol = True
            hex_only = False
    if hex_only:
        return 0
    return lower + upper + digit + symbol


def _is_high_entropy(text: str) -> bool:
    if " " in text or _looks_like_path_or_url(text) or _UUID_RE.match(text):
        return False
    distinct = set(text)
    if not _SECRET_REJECT_CHARS.isdisjoint(distinct):
        return False
    if _char_classes(distinct) < _SECRET_MIN_CHAR_CLASSES:
        return False
    # Counting each of a few distinct characters is faster than a Counter's pass.
    counts = Counter(text).values() if len(distinct) > 64 else map(text.count, distinct)
    n = len(text)
    entropy = 0.0
    for occurrences in counts:
        p = occurrences / n
        entropy -= p * math.log2(p)
    return entropy >= _SECRET_MIN_ENTROPY_BITS


def _looks_like_secret(text: str) -> bool:
    """Whether ``text`` (at most 2,048 characters) looks like a key, a token or a
    password: cheapest checks first, most text is out after a length check."""
    if _PEM_PRIVATE_KEY_MARKER in text:
        return True
    if len(text) < _SECRET_MIN_LENGTH:
        return False
    return _is_high_entropy(text) or _is_known_secret(text)


# -- values -------------------------------------------------------------------------------


class _OutOfTime(Exception):
    """The event's deadline passed while a value was being read."""


def _int_text(value: int) -> str:
    """An integer too big for a JSON number, as text (hex past Python's digit limit)."""
    try:
        return str(value)
    except ValueError:
        return hex(value)


def _json(data: Any) -> str:
    """Walked data (plain, finite, acyclic) as compact JSON text, by the wire's encoder."""
    return dumps(data).decode("utf-8")


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__qualname__)
    except Exception:
        return "unknown"


#: Iterated as lists, 51 items at most (their repr would cost their whole size).
_ITEMS = (list, tuple, set, frozenset, deque, KeysView, ValuesView, ItemsView)
#: Shown by their repr, once their length says it is short enough to inspect.
_SIZED_REPRS = (bytes, bytearray, array.array)
#: Shown by their repr though they have a ``__dict__``: nothing in it is worth showing.
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.MethodType)


class _Walk:
    """One variable's value as JSON-safe data, masked, within the limits.

    ``size`` adds up the characters of the text met so far, with a lower bound for the
    quotes, colons and commas around them: how far into the JSON text the walk is at
    least. Once past ``limit`` (where the text is cut), the rest can not be seen and is
    not read.
    """

    __slots__ = ("deadline", "limit", "nodes", "path", "rules", "size")

    def __init__(self, rules: VariableRules, deadline: float) -> None:
        self.rules = rules
        self.deadline = deadline
        self.limit = rules.max_value_length
        self.nodes = 0
        self.size = 0
        self.path: set[int] = set()

    def value(self, value: Any, depth: int) -> Any:
        if self.size > self.limit:
            return None
        if perf_counter() >= self.deadline:
            raise _OutOfTime
        cls = type(value)
        if cls is str:
            text = self.rules._mask_text(value)
            self.size += len(text) + 3  # its quotes and a comma
            return text
        if cls is int:
            self.size += 2
            return value if _INT_MIN <= value < _INT_END else _int_text(value)
        if cls is float:
            self.size += 4
            return value if math.isfinite(value) else str(value)
        if value is None or cls is bool:
            self.size += 5
            return value
        if issubclass(cls, str):
            return self.value(str.__str__(value), depth)
        if issubclass(cls, int):  # IntEnum, IntFlag, ...
            return self.value(int.__int__(value), depth)
        if issubclass(cls, float):
            return self.value(float.__float__(value), depth)
        if depth >= _MAX_DEPTH:
            return TOO_LONG
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            return TOO_LONG
        ident = id(value)
        if ident in self.path:
            return _CIRCULAR
        self.path.add(ident)
        try:
            return self._compound(value, cls, depth)
        finally:
            self.path.discard(ident)

    def _compound(self, value: Any, cls: type, depth: int) -> Any:
        if cls is dict or (cls is not list and cls is not tuple and isinstance(value, dict)):
            return self._mapping(value.items(), depth)
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a namedtuple
            return self._mapping(zip(cls._fields, value, strict=False), depth, value)
        if isinstance(value, _ITEMS):
            items = list(itertools.islice(value, _MAX_ITEMS + 1))
            if len(items) > _MAX_ITEMS:
                return TOO_LONG
            return [self.value(item, depth + 1) for item in items]
        if isinstance(value, enum.Enum):
            return self._text(f"{_type_name(value)}.{value.name}")
        if isinstance(value, Mapping):
            return self._mapping(value.items(), depth)
        if not isinstance(value, _OPAQUE):
            if dataclasses.is_dataclass(value):
                names = ((f.name, None) for f in dataclasses.fields(value))
                return self._mapping(names, depth, value, read=True)
            attributes = getattr(value, "__dict__", None)
            if type(attributes) is dict and attributes:
                return self._mapping(attributes.items(), depth, value)
        if isinstance(value, _SIZED_REPRS) and len(value) > _MAX_TEXT_TO_SCAN:
            return REDACTED
        return self._repr(value)

    def _mapping(
        self,
        pairs: Iterable[tuple[Any, Any]],
        depth: int,
        owner: Any = None,
        read: bool = False,
    ) -> Any:
        """Key-value pairs as a dict with text keys; with an ``owner`` (an object), its
        type's name under ``"__class__"``; with ``read``, values are the owner's
        attributes, read only for keys that are not masked."""
        items = list(itertools.islice(pairs, _MAX_ITEMS + 1))
        if len(items) > _MAX_ITEMS:
            return TOO_LONG
        rules = self.rules
        out: dict[str, Any] = {}
        for key, item in items:
            if self.size > self.limit:
                break
            try:
                text = self._key(key, depth)
            except _OutOfTime:
                raise
            except Exception:  # a __str__ that fails: the key can not be vouched for
                text = ""
                sent: Any = REDACTED
            else:
                sent = None
            if sent is not None or len(text) > _MAX_TEXT_TO_SCAN:
                text = self._hidden_key(out)
                sent = sent or TOO_LONG
            elif (kind := rules._key_kind(text)) == _KEY_PLAIN:
                pass
            elif kind == _KEY_SECRET_NAME:
                if _FIELD_NAME_RE.fullmatch(text) is None:
                    text = self._hidden_key(out)
                sent = REDACTED
            elif kind == _KEY_SECRET_TEXT:
                text = self._hidden_key(out)
            else:  # a URL: its credentials masked
                text = _URL_CREDENTIALS_RE.sub(_URL_CREDENTIALS_REPLACEMENT, text)
            if text in out:  # 1 and "1", or two URLs that differ in their password
                text = self._hidden_key(out)
            self.size += len(text) + 3  # its quotes and the colon
            if sent is None:
                sent = self.value(getattr(owner, key) if read else item, depth + 1)
            out[text] = sent
        if owner is not None:
            out["__class__"] = _type_name(owner)
        return out

    def _key(self, key: Any, depth: int) -> str:
        cls = type(key)
        if cls is str:
            text: str = key
            return text
        if cls is int:
            return _int_text(key)
        if key is None or cls is bool or cls is float:
            return str(key)
        if cls is tuple or cls is frozenset:  # their str would cost their whole size
            size = self.size  # the key's text is counted once it is known
            walked = self.value(key, depth + 1)
            self.size = size
            return walked if type(walked) is str else _json(walked)
        return str(key)

    @staticmethod
    def _hidden_key(out: dict[str, Any]) -> str:
        n = 0
        while (key := _HIDDEN_KEY.format(n)) in out:
            n += 1
        return key

    def _text(self, text: str) -> str:
        text = self.rules._mask_text(text)
        self.size += len(text)
        return text

    def _repr(self, value: Any) -> str:
        """The last resort, failing closed: a repr too long to inspect is REDACTED, one
        that raises is the type's name in angle brackets."""
        try:
            text = repr(value)
        except Exception:
            return f"<{_type_name(value)}>"
        if len(text) > _MAX_TEXT_TO_SCAN:
            return REDACTED
        return self._text(text)


class _Event:
    """What is left of the event's byte budget and time."""

    __slots__ = ("deadline", "left", "out_of_time")

    def __init__(self, rules: VariableRules) -> None:
        self.deadline = perf_counter() + rules.time_budget
        self.left = rules.max_event_bytes
        self.out_of_time = False


def _encode(value: Any, cls: type, rules: VariableRules, event: _Event) -> Any:
    """One variable's value as sent: a finite number as itself, anything else as text."""
    if cls is str:
        text = rules._mask_text(value)
    elif cls is int:
        if _INT_MIN <= value < _INT_END:
            return value
        text = _int_text(value)
    elif cls is float:
        if math.isfinite(value):
            return value
        text = str(value)
    elif value is None or cls is bool:
        text = str(value)
    else:
        walk = _Walk(rules, event.deadline)
        try:
            walked = walk.value(value, 0)
        except _OutOfTime:
            event.out_of_time = True
            walked = TOO_LONG
        cls = type(walked)
        if cls is str:
            text = walked
        elif cls is int or cls is float:
            return walked
        elif walked is None or cls is bool:
            text = str(walked)
        else:
            text = _json(walked)
    limit = rules.max_value_length
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


#: Values sent raw (numbers) or as their own text, taken before any container or object.
_SIMPLE = (str, int, float, type(None))


def _take_frame(frame: types.FrameType, rules: VariableRules, event: _Event) -> dict[str, Any]:
    try:
        # Read once, as a copy: on Python 3.13+ f_locals is a write-through proxy over
        # the frame (before, a dict refreshed from the frame on each access).
        names = dict(frame.f_locals)
    except Exception:
        return {}
    verdict = rules._verdict
    deadline = event.deadline
    simple: list[tuple[str, int, Any]] = []
    compound: list[tuple[str, int, Any]] = []
    for n, (name, value) in enumerate(names.items()):
        if n & 255 == 255 and perf_counter() >= deadline:  # a module's thousands of names
            event.out_of_time = True
            return {}
        if type(name) is not str or len(name) > _MAX_TEXT_TO_SCAN:
            continue
        kind = verdict(name)
        if kind != _IGNORE:
            (simple if issubclass(type(value), _SIMPLE) else compound).append((name, kind, value))
    del names
    # By name: names are unique, so tuples compare by name alone.
    simple.sort()
    compound.sort()
    taken: dict[str, Any] = {}
    left = event.left
    for name, kind, value in itertools.chain(simple, compound):
        if perf_counter() >= deadline:
            event.out_of_time = True
            break
        if kind == _MASK:
            sent: Any = REDACTED
        else:
            try:
                sent = _encode(value, type(value), rules, event)
            except Exception:
                continue
        # A value's share of the budget, counted as the official SDK counts it: the
        # characters of its text (no quotes), or of a number's decimal form.
        size = len(sent) if type(sent) is str else len(repr(sent))
        if size > left:
            break
        left -= size
        taken[name] = sent
        if event.out_of_time:
            break
    event.left = left
    return taken


def take_variables(
    frames: Sequence[types.FrameType | None], rules: VariableRules
) -> list[dict[str, Any] | None]:
    """For each frame (None: skip it, e.g. not in the app), its variables as a dict
    name -> JSON-safe value (numbers raw, everything else text), or None when nothing was
    taken. One byte budget and one deadline for the whole call.

    In each frame, names matching ``rules.ignore_patterns`` are left out, and the rest
    come in name order: numbers, text, None and booleans first, then containers and
    objects (as JSON text). Call it on the thread that caught the exception, while its
    frames are still as they were.

    Never raises: a frame whose locals fail to read is None, a variable whose value
    fails to read is left out. (An exception that is not an ``Exception``, such as a
    ``KeyboardInterrupt`` in a ``__repr__``, goes on up.)
    """
    frames = list(frames)
    out: list[dict[str, Any] | None] = [None] * len(frames)
    try:
        event = _Event(rules)
    except Exception:  # rules with a time_budget that is not a number
        return out
    for i, frame in enumerate(frames):
        if event.out_of_time:
            break
        if frame is not None:
            try:
                out[i] = _take_frame(frame, rules, event) or None
            except Exception:
                out[i] = None
    return out
