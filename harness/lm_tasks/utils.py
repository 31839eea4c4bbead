"""Data for the harness's offline lm-eval tasks, generated deterministically (no download).

The arithmetic tasks use the exact prompt and target format of lm-eval's own ``arithmetic_*``
tasks ("Question: What is 98 minus 45?\\nAnswer:" -> " 53"), with operands drawn uniformly
from [0, 10^digits) as in the GPT-3 arithmetic set, but they are the harness's own problems:
their names start with ``harness_`` so nobody mistakes them for the hub versions.
"""

from __future__ import annotations

import random

OPERATIONS = {"a": ("plus", lambda x, y: x + y), "s": ("minus", lambda x, y: x - y), "m": ("times", lambda x, y: x * y)}
N_PROBLEMS = 200
SEED = 1234


def arithmetic_problems(digits: int, op: str, n: int = N_PROBLEMS, seed: int = SEED) -> list[dict]:
    """``n`` problems ``{"context", "completion", "answer"}`` for ``digits``-digit operands."""
    word, fn = OPERATIONS[op]
    rng = random.Random(f"{digits}d{op}-{seed}")
    problems = []
    for _ in range(n):
        x, y = rng.randrange(10**digits), rng.randrange(10**digits)
        answer = str(fn(x, y))
        problems.append({"context": f"Question: What is {x} {word} {y}?\nAnswer:", "completion": f" {answer}", "answer": answer})
    return problems


def _validation(rows: list[dict]):
    import datasets

    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})


def _dataset(digits: int, op: str, **kwargs):
    return _validation(arithmetic_problems(digits, op, int(kwargs.get("n_problems", N_PROBLEMS))))


def arith_2da(**kwargs):
    return _dataset(2, "a", **kwargs)


def arith_2ds(**kwargs):
    return _dataset(2, "s", **kwargs)


def arith_4da(**kwargs):
    return _dataset(4, "a", **kwargs)


def arith_4ds(**kwargs):
    return _dataset(4, "s", **kwargs)


def arith_2dm(**kwargs):
    return _dataset(2, "m", **kwargs)


# ---------------------------------------------------------------- held-out response likelihood


def heldout(**kwargs):
    """The run's held-out test split ({prompt, response, n_tokens} JSONL written by the harness);
    its path comes through lm-eval's task metadata as ``heldout_path``."""
    import json

    import datasets

    path = kwargs.get("heldout_path")
    if not path:
        raise ValueError("harness_heldout needs metadata heldout_path (a JSONL of prompt/response/n_tokens)")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def heldout_results(doc, results):
    """Negative log-likelihood of the reference response and its token count (as the harness
    tokenized it), so the aggregate is a per-token loss."""
    loglikelihood, _ = results[0]
    item = (-loglikelihood, doc["n_tokens"])
    return {"token_nll": item, "token_perplexity": item}


def mean_token_nll(items):
    return sum(nll for nll, _ in items) / max(1, sum(n for _, n in items))


def token_perplexity(items):
    import math

    return math.exp(mean_token_nll(items))


# ---------------------------------------------------------------- forgetting probes the base model can do
#
# The 135M base model is at the floor on 2- and 4-digit arithmetic, so those tasks cannot show
# forgetting. These three probes are ones it does well above chance: subject-verb agreement
# across an attractor, country capitals, and arithmetic with a one-digit second operand.
# Each is generated deterministically and shuffled by a fixed seed, so ``eval.limit`` takes a
# representative prefix.


def _shuffled(items: list, name: str, seed: int) -> list:
    random.Random(f"{name}-{seed}").shuffle(items)
    return items


# Subject-verb agreement minimal pairs (BLiMP / Marvin & Linzen style). In every pair the
# attractor noun between subject and verb has the other number; the bad sentence's verb agrees
# with the attractor. Nouns are (singular, plural).
_THINGS = [("key", "keys"), ("book", "books"), ("box", "boxes"), ("letter", "letters"), ("picture", "pictures"),
           ("bottle", "bottles"), ("lamp", "lamps"), ("chair", "chairs"), ("cup", "cups"), ("coat", "coats"),
           ("plate", "plates"), ("clock", "clocks")]
_PLACES = [("cabinet", "cabinets"), ("window", "windows"), ("door", "doors"), ("shelf", "shelves"),
           ("desk", "desks"), ("bed", "beds"), ("table", "tables"), ("wall", "walls")]
_THING_ADJECTIVES = ["old", "broken", "new", "dusty", "small", "heavy", "clean", "red"]
_PEOPLE = [("author", "authors"), ("teacher", "teachers"), ("doctor", "doctors"), ("student", "students"),
           ("manager", "managers"), ("pilot", "pilots"), ("farmer", "farmers"), ("lawyer", "lawyers"),
           ("singer", "singers"), ("nurse", "nurses")]
_ATTRACTOR_PEOPLE = [("child", "children"), ("woman", "women"), ("man", "men"), ("guard", "guards"),
                     ("senator", "senators"), ("dancer", "dancers"), ("customer", "customers"), ("neighbor", "neighbors")]
_RELATIVES = [("friend", "friends"), ("sister", "sisters"), ("brother", "brothers"), ("cousin", "cousins"),
              ("boss", "bosses"), ("parent", "parents")]
_PERSON_ADJECTIVES = ["tall", "happy", "tired", "young", "busy", "late", "nervous", "friendly"]
_INTRANSITIVE = [("smiles", "smile"), ("laughs", "laugh"), ("sleeps", "sleep"), ("waits", "wait"),
                 ("works", "work"), ("swims", "swim")]
_PARTICIPLES = ["arrived", "left", "returned", "finished"]
_BE_PRESENT, _BE_PAST, _HAVE, _LIKE = ("is", "are"), ("was", "were"), ("has", "have"), ("likes", "like")

# Per template: (name, subject nouns, attractor nouns, (singular, plural) verb forms or None for
# a lexical verb, completions, the prefix with {s} subject and {a} attractor). A lexical-verb
# template's completions are the (3sg, plural) verb pairs themselves.
_AGREEMENT_TEMPLATES = [
    ("pp_near", _THINGS, _PLACES, _BE_PRESENT, _THING_ADJECTIVES, "The {s} near the {a}"),
    ("pp_on", _THINGS, _PLACES, _BE_PAST, _THING_ADJECTIVES, "The {s} on the {a}"),
    ("pp_next_to", _PEOPLE, _ATTRACTOR_PEOPLE, None, _INTRANSITIVE, "The {s} next to the {a}"),
    ("object_relative", _PEOPLE, _ATTRACTOR_PEOPLE, _BE_PRESENT, _PERSON_ADJECTIVES, "The {s} that the {a} {like}"),
    ("subject_relative", _PEOPLE, _ATTRACTOR_PEOPLE, _HAVE, _PARTICIPLES, "The {s} who helped the {a}"),
    ("of_possessor", _RELATIVES, _PEOPLE, _BE_PRESENT, _PERSON_ADJECTIVES, "The {s} of the {a}"),
]
AGREEMENT_PER_TEMPLATE = 110


def agreement_pairs(per_template: int = AGREEMENT_PER_TEMPLATE, seed: int = SEED) -> list[dict]:
    """Minimal pairs ``{"template", "prefix", "good", "bad", "sentence_good", "sentence_bad"}``:
    the sentences share ``prefix`` (subject and attractor) and differ only in the verb's number,
    so ``good`` and ``bad`` are the continuations after it (the prefix's log-probability cancels,
    so comparing continuations is comparing whole sentences). Half the pairs have a singular
    subject and a plural attractor, half the reverse."""
    pairs = []
    for name, subjects, attractors, verb, completions, prefix in _AGREEMENT_TEMPLATES:
        combos = [(s, a, c, plural) for s in subjects for a in attractors for c in completions for plural in (0, 1)
                  if s[0] != a[0]]
        for s, a, completion, plural in random.Random(f"agreement-{name}-{seed}").sample(combos, per_template):
            attractor = a[1 - plural]  # the other number
            text = prefix.format(s=s[plural], a=attractor, like=_LIKE[1 - plural])
            if verb is None:  # a lexical verb: completion is its (3sg, plural) pair
                good, bad = f"{completion[plural]}.", f"{completion[1 - plural]}."
            else:
                good, bad = f"{verb[plural]} {completion}.", f"{verb[1 - plural]} {completion}."
            pairs.append({"template": name, "prefix": text, "good": good, "bad": bad,
                          "sentence_good": f"{text} {good}", "sentence_bad": f"{text} {bad}"})
    return _shuffled(pairs, "agreement", seed)


def agreement(**kwargs):
    return _validation(agreement_pairs())


def agreement_results(doc, results):
    """Choices are (good, bad): acc = the grammatical sentence is more likely; margin = its
    log-probability minus the ungrammatical one's (nats)."""
    (good, _), (bad, _) = results
    return {"acc": float(good > bad), "margin": good - bad}


# Country capitals: (country as it reads after "The capital of", capital, region): 200 sovereign
# states and territories whose capital is not in dispute. Left out on purpose:
# countries whose capital is disputed, split or moving (Bolivia, South Africa, Israel, Palestine,
# Sri Lanka, Cote d'Ivoire, Benin, Eswatini, Burundi, Equatorial Guinea, Indonesia, Kiribati,
# Nauru, American Samoa), city-states named like their capital (Singapore, Monaco, Vatican City, San Marino,
# Luxembourg, Djibouti) and Georgia (read as the US state).
CAPITALS = [
    # Africa
    ("Algeria", "Algiers", "africa"), ("Angola", "Luanda", "africa"), ("Botswana", "Gaborone", "africa"),
    ("Burkina Faso", "Ouagadougou", "africa"), ("Cape Verde", "Praia", "africa"), ("Cameroon", "Yaoundé", "africa"),
    ("the Central African Republic", "Bangui", "africa"), ("Chad", "N'Djamena", "africa"),
    ("the Comoros", "Moroni", "africa"), ("the Democratic Republic of the Congo", "Kinshasa", "africa"),
    ("the Republic of the Congo", "Brazzaville", "africa"), ("Egypt", "Cairo", "africa"), ("Eritrea", "Asmara", "africa"),
    ("Ethiopia", "Addis Ababa", "africa"), ("Gabon", "Libreville", "africa"), ("the Gambia", "Banjul", "africa"),
    ("Ghana", "Accra", "africa"), ("Guinea", "Conakry", "africa"), ("Guinea-Bissau", "Bissau", "africa"),
    ("Kenya", "Nairobi", "africa"), ("Lesotho", "Maseru", "africa"), ("Liberia", "Monrovia", "africa"),
    ("Libya", "Tripoli", "africa"), ("Madagascar", "Antananarivo", "africa"), ("Malawi", "Lilongwe", "africa"),
    ("Mali", "Bamako", "africa"), ("Mauritania", "Nouakchott", "africa"), ("Mauritius", "Port Louis", "africa"),
    ("Morocco", "Rabat", "africa"), ("Mozambique", "Maputo", "africa"), ("Namibia", "Windhoek", "africa"),
    ("Niger", "Niamey", "africa"), ("Nigeria", "Abuja", "africa"), ("Rwanda", "Kigali", "africa"),
    ("Sao Tome and Principe", "São Tomé", "africa"), ("Senegal", "Dakar", "africa"),
    ("Seychelles", "Victoria", "africa"), ("Sierra Leone", "Freetown", "africa"), ("Somalia", "Mogadishu", "africa"),
    ("South Sudan", "Juba", "africa"), ("Sudan", "Khartoum", "africa"), ("Tanzania", "Dodoma", "africa"),
    ("Togo", "Lomé", "africa"), ("Tunisia", "Tunis", "africa"), ("Uganda", "Kampala", "africa"),
    ("Zambia", "Lusaka", "africa"), ("Zimbabwe", "Harare", "africa"),
    # The Americas
    ("Antigua and Barbuda", "St. John's", "americas"), ("Argentina", "Buenos Aires", "americas"),
    ("the Bahamas", "Nassau", "americas"), ("Barbados", "Bridgetown", "americas"), ("Belize", "Belmopan", "americas"),
    ("Bermuda", "Hamilton", "americas"), ("Brazil", "Brasília", "americas"), ("Canada", "Ottawa", "americas"),
    ("Chile", "Santiago", "americas"), ("Colombia", "Bogotá", "americas"), ("Costa Rica", "San José", "americas"),
    ("Cuba", "Havana", "americas"), ("Dominica", "Roseau", "americas"),
    ("the Dominican Republic", "Santo Domingo", "americas"), ("Ecuador", "Quito", "americas"),
    ("El Salvador", "San Salvador", "americas"), ("Greenland", "Nuuk", "americas"), ("Grenada", "St. George's", "americas"),
    ("Guatemala", "Guatemala City", "americas"), ("Guyana", "Georgetown", "americas"),
    ("Haiti", "Port-au-Prince", "americas"), ("Honduras", "Tegucigalpa", "americas"), ("Jamaica", "Kingston", "americas"),
    ("Mexico", "Mexico City", "americas"), ("Nicaragua", "Managua", "americas"), ("Panama", "Panama City", "americas"),
    ("Paraguay", "Asunción", "americas"), ("Peru", "Lima", "americas"), ("Puerto Rico", "San Juan", "americas"),
    ("Saint Kitts and Nevis", "Basseterre", "americas"), ("Saint Lucia", "Castries", "americas"),
    ("Saint Vincent and the Grenadines", "Kingstown", "americas"), ("Suriname", "Paramaribo", "americas"),
    ("Trinidad and Tobago", "Port of Spain", "americas"), ("the United States", "Washington, D.C.", "americas"),
    ("Uruguay", "Montevideo", "americas"), ("Venezuela", "Caracas", "americas"),
    ("Anguilla", "The Valley", "americas"), ("Aruba", "Oranjestad", "americas"),
    ("the British Virgin Islands", "Road Town", "americas"), ("the Cayman Islands", "George Town", "americas"),
    ("Curaçao", "Willemstad", "americas"), ("the Falkland Islands", "Stanley", "americas"),
    ("Sint Maarten", "Philipsburg", "americas"), ("the Turks and Caicos Islands", "Cockburn Town", "americas"),
    ("the United States Virgin Islands", "Charlotte Amalie", "americas"),
    # Europe
    ("Albania", "Tirana", "europe"), ("Andorra", "Andorra la Vella", "europe"), ("Austria", "Vienna", "europe"),
    ("Belarus", "Minsk", "europe"), ("Belgium", "Brussels", "europe"), ("Bosnia and Herzegovina", "Sarajevo", "europe"),
    ("Bulgaria", "Sofia", "europe"), ("Croatia", "Zagreb", "europe"), ("Cyprus", "Nicosia", "europe"),
    ("the Czech Republic", "Prague", "europe"), ("Denmark", "Copenhagen", "europe"), ("Estonia", "Tallinn", "europe"),
    ("the Faroe Islands", "Tórshavn", "europe"), ("Finland", "Helsinki", "europe"), ("France", "Paris", "europe"),
    ("Germany", "Berlin", "europe"), ("Greece", "Athens", "europe"), ("Hungary", "Budapest", "europe"),
    ("Iceland", "Reykjavik", "europe"), ("Ireland", "Dublin", "europe"), ("Italy", "Rome", "europe"),
    ("Kosovo", "Pristina", "europe"), ("Latvia", "Riga", "europe"), ("Liechtenstein", "Vaduz", "europe"),
    ("Lithuania", "Vilnius", "europe"), ("Malta", "Valletta", "europe"), ("Moldova", "Chisinau", "europe"),
    ("Montenegro", "Podgorica", "europe"), ("the Netherlands", "Amsterdam", "europe"),
    ("North Macedonia", "Skopje", "europe"), ("Northern Ireland", "Belfast", "europe"), ("Norway", "Oslo", "europe"),
    ("Poland", "Warsaw", "europe"), ("Portugal", "Lisbon", "europe"), ("Romania", "Bucharest", "europe"),
    ("Russia", "Moscow", "europe"), ("Scotland", "Edinburgh", "europe"), ("Serbia", "Belgrade", "europe"),
    ("Slovakia", "Bratislava", "europe"), ("Slovenia", "Ljubljana", "europe"), ("Spain", "Madrid", "europe"),
    ("Sweden", "Stockholm", "europe"), ("Switzerland", "Bern", "europe"), ("Ukraine", "Kyiv", "europe"),
    ("the United Kingdom", "London", "europe"), ("Wales", "Cardiff", "europe"),
    ("Guernsey", "St. Peter Port", "europe"), ("the Isle of Man", "Douglas", "europe"), ("Jersey", "St. Helier", "europe"),
    # Asia
    ("Afghanistan", "Kabul", "asia"), ("Armenia", "Yerevan", "asia"), ("Azerbaijan", "Baku", "asia"),
    ("Bahrain", "Manama", "asia"), ("Bangladesh", "Dhaka", "asia"), ("Bhutan", "Thimphu", "asia"),
    ("Brunei", "Bandar Seri Begawan", "asia"), ("Cambodia", "Phnom Penh", "asia"), ("China", "Beijing", "asia"),
    ("East Timor", "Dili", "asia"), ("India", "New Delhi", "asia"), ("Iran", "Tehran", "asia"), ("Iraq", "Baghdad", "asia"),
    ("Japan", "Tokyo", "asia"), ("Jordan", "Amman", "asia"), ("Kazakhstan", "Astana", "asia"),
    ("Kuwait", "Kuwait City", "asia"), ("Kyrgyzstan", "Bishkek", "asia"), ("Laos", "Vientiane", "asia"),
    ("Lebanon", "Beirut", "asia"), ("Malaysia", "Kuala Lumpur", "asia"), ("the Maldives", "Malé", "asia"),
    ("Mongolia", "Ulaanbaatar", "asia"), ("Myanmar", "Naypyidaw", "asia"), ("Nepal", "Kathmandu", "asia"),
    ("North Korea", "Pyongyang", "asia"), ("Oman", "Muscat", "asia"), ("Pakistan", "Islamabad", "asia"),
    ("the Philippines", "Manila", "asia"), ("Qatar", "Doha", "asia"), ("Saudi Arabia", "Riyadh", "asia"),
    ("South Korea", "Seoul", "asia"), ("Syria", "Damascus", "asia"), ("Taiwan", "Taipei", "asia"),
    ("Tajikistan", "Dushanbe", "asia"), ("Thailand", "Bangkok", "asia"), ("Turkey", "Ankara", "asia"),
    ("Turkmenistan", "Ashgabat", "asia"), ("the United Arab Emirates", "Abu Dhabi", "asia"),
    ("Uzbekistan", "Tashkent", "asia"), ("Vietnam", "Hanoi", "asia"), ("Yemen", "Sanaa", "asia"),
    # Oceania
    ("Australia", "Canberra", "oceania"), ("Fiji", "Suva", "oceania"), ("the Marshall Islands", "Majuro", "oceania"),
    ("Micronesia", "Palikir", "oceania"), ("New Zealand", "Wellington", "oceania"), ("Palau", "Ngerulmud", "oceania"),
    ("Papua New Guinea", "Port Moresby", "oceania"), ("Samoa", "Apia", "oceania"),
    ("the Solomon Islands", "Honiara", "oceania"), ("Tonga", "Nuku'alofa", "oceania"), ("Tuvalu", "Funafuti", "oceania"),
    ("Vanuatu", "Port Vila", "oceania"), ("the Cook Islands", "Avarua", "oceania"),
    ("French Polynesia", "Papeete", "oceania"), ("Guam", "Hagåtña", "oceania"), ("New Caledonia", "Nouméa", "oceania"),
]


def capital_questions(seed: int = SEED) -> list[dict]:
    """``{"country", "choices", "gold"}`` per country: the capital and three distractors, other
    capitals of the same region (so the choice is not given away by geography), in a seeded
    order; ``gold`` is the capital's index."""
    questions = []
    for country, capital, region in CAPITALS:
        rng = random.Random(f"capitals-{country}-{seed}")
        others = sorted(c for _, c, r in CAPITALS if r == region and c != capital)
        choices = rng.sample(others, 3) + [capital]
        rng.shuffle(choices)
        questions.append({"country": country, "choices": choices, "gold": choices.index(capital)})
    return _shuffled(questions, "capitals", seed)


def capitals(**kwargs):
    return _validation(capital_questions())


def capitals_results(doc, results):
    """acc = the capital is the most likely of the four (lm-eval's acc); margin = its
    log-probability minus the best distractor's (nats)."""
    lls = [ll for ll, _ in results]
    gold = lls[doc["gold"]]
    best_other = max(ll for i, ll in enumerate(lls) if i != doc["gold"])
    return {"acc": float(gold > best_other), "margin": gold - best_other}


# Arithmetic with a one-digit second operand, in the harness's arithmetic format: every a + b
# with a, b in 0..9, every a - b with 0 <= b <= a <= 9, and every a + b with a in 10..99 and b in
# 0..9 (1,055 problems). The training data mix (``data.mix``) uses two-digit second operands
# only, so it never holds a probe problem.
ADD1D_MAX_SECOND_OPERAND = 9


def add1d_problems(seed: int = SEED) -> list[dict]:
    """``{"context", "completion", "answer"}`` for the harness_add1d probe, in a seeded order."""
    triples = [(a, "plus", b) for a in range(10) for b in range(10)]
    triples += [(a, "minus", b) for a in range(10) for b in range(a + 1)]
    triples += [(a, "plus", b) for a in range(10, 100) for b in range(10)]
    problems = []
    for x, word, y in triples:
        answer = str(x + y if word == "plus" else x - y)
        problems.append({"context": f"Question: What is {x} {word} {y}?\nAnswer:", "completion": f" {answer}", "answer": answer})
    return _shuffled(problems, "add1d", seed)


def add1d(**kwargs):
    return _validation(add1d_problems())


def add1d_results(doc, results):
    """acc = the gold answer is the greedy continuation (lm-eval's loglikelihood acc);
    gold_logprob = its log-probability (nats)."""
    loglikelihood, is_greedy = results[0]
    return {"acc": float(is_greedy), "gold_logprob": loglikelihood}
