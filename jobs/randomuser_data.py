"""Per-nationality value pools for the offline randomuser source.

Faker is slow (tens of microseconds a value), so it runs only here, once per process:
each nationality gets a few hundred values per field, drawn from a Faker instance seeded
with the nationality code. Same Faker version => same pools => same users for a seed.
Where Faker has no locale (Serbian) or a poor one (Turkish addresses, some regions) a
short vocabulary list fills in, like Faker's own tables do.
"""

# The vocabularies below are non-ASCII on purpose (Turkish dotless i, Cyrillic).
# ruff: noqa: RUF001

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from faker import Faker
from faker.decode import unidecode

# The nationalities randomuser.me API 1.4 serves.
NATIONALITIES: tuple[str, ...] = (
    "AU", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE",
    "IN", "IR", "MX", "NL", "NO", "NZ", "RS", "TR", "UA", "US",
)  # fmt: skip

# The API draws the timezone from this fixed list, unrelated to the country (a known quirk).
TIMEZONES: tuple[tuple[str, str], ...] = (
    ("-12:00", "Eniwetok, Kwajalein"),
    ("-11:00", "Midway Island, Samoa"),
    ("-10:00", "Hawaii"),
    ("-9:00", "Alaska"),
    ("-8:00", "Pacific Time (US & Canada)"),
    ("-7:00", "Mountain Time (US & Canada)"),
    ("-6:00", "Central Time (US & Canada), Mexico City"),
    ("-5:00", "Eastern Time (US & Canada), Bogota, Lima"),
    ("-4:00", "Atlantic Time (Canada), Caracas, La Paz"),
    ("-3:30", "Newfoundland"),
    ("-3:00", "Brazil, Buenos Aires, Georgetown"),
    ("-2:00", "Mid-Atlantic"),
    ("-1:00", "Azores, Cape Verde Islands"),
    ("0:00", "Western Europe Time, London, Lisbon, Casablanca"),
    ("+1:00", "Brussels, Copenhagen, Madrid, Paris"),
    ("+2:00", "Kaliningrad, South Africa"),
    ("+3:00", "Baghdad, Riyadh, Moscow, St. Petersburg"),
    ("+3:30", "Tehran"),
    ("+4:00", "Abu Dhabi, Muscat, Baku, Tbilisi"),
    ("+4:30", "Kabul"),
    ("+5:00", "Ekaterinburg, Islamabad, Karachi, Tashkent"),
    ("+5:30", "Bombay, Calcutta, Madras, New Delhi"),
    ("+5:45", "Kathmandu"),
    ("+6:00", "Almaty, Dhaka, Colombo"),
    ("+7:00", "Bangkok, Hanoi, Jakarta"),
    ("+8:00", "Beijing, Perth, Singapore, Hong Kong"),
    ("+9:00", "Tokyo, Seoul, Osaka, Sapporo, Yakutsk"),
    ("+9:30", "Adelaide, Darwin"),
    ("+10:00", "Eastern Australia, Guam, Vladivostok"),
    ("+11:00", "Magadan, Solomon Islands, New Caledonia"),
    ("+12:00", "Auckland, Wellington, Fiji, Kamchatka"),
)

# Vocabulary for usernames ("quietotter482") and the weak passwords the API hands out.
ADJECTIVES = (
    "angry", "big", "black", "blue", "brave", "brown", "busy", "calm", "crazy", "golden",
    "green", "happy", "heavy", "lazy", "little", "lucky", "orange", "purple", "quiet", "red",
    "sad", "silver", "small", "smart", "tiny", "white", "wild", "yellow",
)  # fmt: skip
ANIMALS = (
    "bear", "bird", "butterfly", "cat", "dog", "duck", "elephant", "fish", "frog", "goose",
    "gorilla", "koala", "ladybug", "leopard", "lion", "monkey", "mouse", "otter", "panda",
    "peacock", "rabbit", "snake", "swan", "tiger", "wolf", "zebra",
)  # fmt: skip
WEAK_SECRETS = (
    "summer", "winter", "dragon", "monkey", "sunshine", "shadow", "master", "hunter",
    "qwerty", "letmein", "football", "baseball", "welcome", "trustno1", "flower", "cookie",
    "pepper", "ginger", "tigger", "matrix", "hello", "freedom", "whatever", "cheese",
    "123456", "password1", "abc123", "iloveyou", "batman", "starwars", "1q2w3e4r", "zxcvbnm",
)  # fmt: skip

_ENGLISH_TITLES = (("Mr",), ("Ms", "Mrs", "Miss"))
_FRENCH_TITLES = (("Monsieur",), ("Madame", "Mademoiselle"))
_GERMAN_TITLES = (("Herr",), ("Frau",))

# Serbian has no Faker locale: a short Cyrillic vocabulary (dje, je, lje, nje, tshe set it apart).
_SR_MALE = (
    "Милош", "Никола", "Стефан", "Лазар", "Марко", "Душан", "Ђорђе", "Вук", "Бранислав",
    "Драган", "Жељко", "Милан", "Небојша", "Огњен", "Војислав", "Срђан", "Љубомир", "Ненад",
)  # fmt: skip
_SR_FEMALE = (
    "Јована", "Милица", "Ана", "Драгана", "Љиљана", "Тијана", "Јелена", "Ђурђина", "Снежана",
    "Невена", "Катарина", "Теодора", "Бранка", "Зорица", "Мирјана", "Вишња", "Гордана", "Дуња",
)  # fmt: skip
_SR_LAST = (
    "Јовановић", "Петровић", "Николић", "Марковић", "Ђорђевић", "Стојановић", "Илић",
    "Станковић", "Павловић", "Милошевић", "Ђурић", "Стевановић", "Тодоровић", "Лукић",
    "Костић", "Жикић", "Радосављевић", "Цветковић", "Савић", "Митровић", "Јањић", "Љубић",
)  # fmt: skip
_SR_CITIES = (
    "Београд", "Нови Сад", "Ниш", "Крагујевац", "Суботица", "Зрењанин", "Панчево", "Чачак",
    "Краљево", "Нови Пазар", "Смедерево", "Лесковац", "Ваљево", "Ужице", "Вршац", "Шабац",
    "Сомбор", "Пожаревац", "Пирот", "Зајечар", "Кикинда", "Јагодина", "Врање", "Ћуприја",
)  # fmt: skip
_SR_STATES = (
    "Београдски", "Јужнобачки", "Нишавски", "Шумадијски", "Златиборски", "Расински",
    "Подунавски", "Колубарски", "Мачвански", "Пчињски", "Сремски", "Браничевски", "Јабланички",
)  # fmt: skip
_SR_STREETS = (
    "Кнеза Милоша", "Булевар ослобођења", "Његошева", "Цара Душана", "Вука Караџића",
    "Карађорђева", "Светог Саве", "Немањина", "Јована Цвијића", "Доситејева", "Таковска",
    "Краља Петра", "Змај Јовина", "Ђуре Јакшића", "Милоша Обилића", "Војводе Путника",
)  # fmt: skip
_SR_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "eunet.rs", "mts.rs")
# tr_TR has names but English-style addresses: Turkish provinces and street suffixes instead.
_TR_PROVINCES = (
    "İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Şanlıurfa", "Eskişehir", "Muğla",
    "Kırıkkale", "Çanakkale", "Diyarbakır", "Ağrı", "Kütahya", "Uşak", "Iğdır", "Düzce",
    "Gümüşhane", "Tekirdağ", "Kahramanmaraş", "Çorum", "Niğde", "Bartın", "Karabük", "Sivas",
)  # fmt: skip
_REGIONS = {
    "NO": ("Oslo", "Rogaland", "Vestland", "Trøndelag", "Nordland", "Innlandet", "Viken", "Agder",
           "Møre og Romsdal", "Vestfold og Telemark", "Troms og Finnmark"),
    "NZ": ("Auckland", "Wellington", "Canterbury", "Otago", "Waikato", "Bay of Plenty", "Northland",
           "Manawatu-Wanganui", "Hawke's Bay", "Taranaki", "Southland", "Nelson", "Marlborough"),
    "RS": _SR_STATES,
    "TR": _TR_PROVINCES,
}  # fmt: skip


def _digits(n: int) -> Callable[[random.Random], str]:
    return _fmt("#" * n)


def _fmt(template: str) -> Callable[[random.Random], str]:
    """'#' -> a digit, '@' -> a capital letter; for national id numbers.

    The template is split once so that each run of digits costs one random draw.
    """
    parts = re.findall(r"#+|@|[^#@]+", template)

    def make(rng: random.Random) -> str:
        r = rng.random
        out = []
        for part in parts:
            if part[0] == "#":
                out.append(f"{int(r() * 10 ** len(part)):0{len(part)}d}")
            elif part == "@":
                out.append(chr(65 + int(r() * 26)))
            else:
                out.append(part)
        return "".join(out)

    return make


@dataclass(frozen=True)
class NatSpec:
    """What differs between nationalities besides Faker data."""

    locales: tuple[str, ...]
    country: str
    titles: tuple[tuple[str, ...], tuple[str, ...]]  # (male, female)
    numeric_postcode: bool  # the API sends these as JSON numbers
    id_name: str  # "" => id.value is always null (IR, NZ, TR, UA in the real API)
    id_value: Callable[[random.Random], str] | None = None


SPECS: dict[str, NatSpec] = {
    "AU": NatSpec(("en_AU",), "Australia", _ENGLISH_TITLES, True, "TFN", _digits(9)),
    "BR": NatSpec(("pt_BR",), "Brazil", _ENGLISH_TITLES, True, "CPF", _fmt("###.###.###-##")),
    "CA": NatSpec(("en_CA",), "Canada", _ENGLISH_TITLES, False, "SIN", _digits(9)),
    "CH": NatSpec(("de_CH", "fr_CH"), "Switzerland", _FRENCH_TITLES, True, "AVS", _fmt("756.####.####.##")),
    "DE": NatSpec(("de_DE",), "Germany", _GERMAN_TITLES, True, "SVNR", _fmt("## ###### @ ###")),
    "DK": NatSpec(("da_DK",), "Denmark", _ENGLISH_TITLES, True, "CPR", _fmt("######-####")),
    "ES": NatSpec(("es_ES",), "Spain", _ENGLISH_TITLES, True, "DNI", _fmt("########-@")),
    # The real API's Finnish and French ids are junk strings ("NaNNA771undefined").
    "FI": NatSpec(("fi_FI",), "Finland", _ENGLISH_TITLES, True, "HETU", _fmt("NaNNA###undefined")),
    "FR": NatSpec(("fr_FR",), "France", _FRENCH_TITLES, True, "INSEE", _fmt("1NNaN########## ##")),
    "GB": NatSpec(("en_GB",), "United Kingdom", _ENGLISH_TITLES, False, "NINO", _fmt("@@ ## ## ## @")),
    "IE": NatSpec(("en_IE",), "Ireland", _ENGLISH_TITLES, False, "PPS", _fmt("#######@")),
    "IN": NatSpec(("hi_IN",), "India", _ENGLISH_TITLES, True, "UIDAI", _digits(12)),
    "IR": NatSpec(("fa_IR",), "Iran", _ENGLISH_TITLES, True, ""),
    "MX": NatSpec(("es_MX",), "Mexico", _ENGLISH_TITLES, True, "NSS", _fmt("## ## ## ####-#")),
    "NL": NatSpec(("nl_NL",), "Netherlands", _ENGLISH_TITLES, False, "BSN", _digits(8)),
    "NO": NatSpec(("no_NO",), "Norway", _ENGLISH_TITLES, True, "FN", _digits(11)),
    "NZ": NatSpec(("en_NZ",), "New Zealand", _ENGLISH_TITLES, True, ""),
    "RS": NatSpec((), "Serbia", _ENGLISH_TITLES, True, "SID", _digits(9)),
    "TR": NatSpec(("tr_TR",), "Turkey", _ENGLISH_TITLES, True, ""),
    "UA": NatSpec(("uk_UA",), "Ukraine", _ENGLISH_TITLES, True, ""),
    "US": NatSpec(("en_US",), "United States", _ENGLISH_TITLES, True, "SSN", _fmt("###-##-####")),
}


@dataclass(frozen=True)
class Pool:
    """Ready-made values for one nationality. Names carry an ASCII form for e-mail addresses."""

    nat: str
    spec: NatSpec
    male: tuple[tuple[str, str], ...]
    female: tuple[tuple[str, str], ...]
    last: tuple[tuple[str, str], ...]
    cities: tuple[str, ...]
    states: tuple[str, ...]
    streets: tuple[str, ...]
    postcodes: tuple[int | str, ...]
    phones: tuple[str, ...]
    domains: tuple[str, ...]  # repeated entries weight the draw


def _ascii(name: str) -> str:
    return re.sub(r"[^a-z]", "", unidecode(name).lower()) or "user"


def _named(values: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((v, _ascii(v)) for v in values)


def _unique(draw: Callable[[], str], size: int) -> list[str]:
    # dict keeps first-seen order (a set would follow PYTHONHASHSEED and break reproducibility).
    return list(dict.fromkeys(draw() for _ in range(size * 2)))[:size]


def _region(fakers: list[Faker]) -> str:
    fake = fakers[0]
    for method in ("state", "administrative_unit", "region", "county"):
        if hasattr(fake, method):
            return getattr(fake, method)()
    raise LookupError(f"no region provider for {fake.locales}")


# Faker sometimes omits the space the API (and the post office) puts in these postcodes.
_UNSPACED_POSTCODE = {
    "CA": (re.compile(r"[A-Z]\d[A-Z]\d[A-Z]\d"), 3),  # "V7E6L6" -> "V7E 6L6"
    "IE": (re.compile(r"[A-Z0-9]{7}"), 3),  # Eircode "D02X285" -> "D02 X285"
    "NL": (re.compile(r"\d{4}[A-Z]{2}"), 4),  # "1234AB" -> "1234 AB"
}


def _postcode(nat: str, raw: str) -> int | str:
    if SPECS[nat].numeric_postcode:
        return int(re.sub(r"\D", "", raw) or "0")
    pattern, cut = _UNSPACED_POSTCODE.get(nat, (None, 0))
    if pattern and pattern.fullmatch(raw):
        return f"{raw[:cut]} {raw[cut:]}"
    return raw


def _build(nat: str, size: int) -> Pool:
    spec = SPECS[nat]
    local = random.Random(f"pool-{nat}")  # noqa: S311 - synthetic data, reproducibility wanted
    fakers = []
    for locale in spec.locales:
        fake = Faker(locale)
        fake.seed_instance(f"{nat}-{locale}")
        fakers.append(fake)

    def draw(method: str) -> Callable[[], str]:
        return lambda: getattr(local.choice(fakers), method)()

    common = ["gmail.com"] * 4 + ["outlook.com", "icloud.com"] + ["example.com"] * 2
    if nat == "RS":
        male, female, last = list(_SR_MALE), list(_SR_FEMALE), list(_SR_LAST)
        cities, streets = list(_SR_CITIES), list(_SR_STREETS)
        phones = [_fmt(local.choice(("0##-###-###", "06#-###-####")))(local) for _ in range(size)]
        postcodes = [local.randrange(11000, 38000) for _ in range(size)]
        domains = common + list(_SR_DOMAINS)
    else:
        male = _unique(draw("first_name_male"), size)
        female = _unique(draw("first_name_female"), size)
        last = _unique(draw("last_name"), size)
        cities = _unique(draw("city"), size)
        streets = _unique(draw("street_name"), size)
        phones = _unique(draw("phone_number"), size)
        postcodes = [_postcode(nat, draw("postcode")()) for _ in range(size)]
        domains = common + _unique(draw("free_email_domain"), 20)
    if nat == "TR":
        cities = list(_TR_PROVINCES)
        streets = [f"{name} {local.choice(('Sk', 'Cd', 'Sokak', 'Caddesi'))}" for name in last]
    states = list(_REGIONS.get(nat, ())) or _unique(lambda: _region(fakers), size)
    return Pool(
        nat=nat,
        spec=spec,
        male=_named(male),
        female=_named(female),
        last=_named(last),
        cities=tuple(cities),
        states=tuple(states),
        streets=tuple(streets),
        postcodes=tuple(postcodes),
        phones=tuple(phones),
        domains=tuple(domains),
    )


@cache
def build_pools(size: int = 300) -> dict[str, Pool]:
    """All nationalities' pools; about a second of Faker work, done once per process."""
    return {nat: _build(nat, size) for nat in NATIONALITIES}
