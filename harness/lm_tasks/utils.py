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
_BE_PRESENT, _BE_PAST = ("is", "are"), ("was", "were")

# Per template: (name, subject nouns, attractor nouns, (singular, plural) verb forms or None for
# a lexical verb, completions, the prefix with {s} subject and {a} attractor). A lexical-verb
# template's completions are the (3sg, plural) verb pairs themselves. Tried and left out, because
# the 135M base model is at or below chance on them (110 pairs each), so they could not show
# forgetting: object relatives ("The author that the guards like is/are tall.", 0.59), subject
# relatives ("The student who helped the men has/have left.", 0.46) and "The pilot behind the
# senators swims/swim." (0.38).
_AGREEMENT_TEMPLATES = [
    ("pp_near", _THINGS, _PLACES, _BE_PRESENT, _THING_ADJECTIVES, "The {s} near the {a}"),
    ("pp_on", _THINGS, _PLACES, _BE_PAST, _THING_ADJECTIVES, "The {s} on the {a}"),
    ("pp_next_to", _PEOPLE, _ATTRACTOR_PEOPLE, None, _INTRANSITIVE, "The {s} next to the {a}"),
    ("pp_with", _PEOPLE, _ATTRACTOR_PEOPLE, _BE_PAST, _PERSON_ADJECTIVES, "The {s} with the {a}"),
    ("of_possessor", _RELATIVES, _PEOPLE, _BE_PRESENT, _PERSON_ADJECTIVES, "The {s} of the {a}"),
]
AGREEMENT_PER_TEMPLATE = 132


def agreement_pairs(per_template: int = AGREEMENT_PER_TEMPLATE, seed: int = SEED) -> list[dict]:
    """Minimal pairs ``{"template", "prefix", "good", "bad", "sentence_good", "sentence_bad"}``:
    the sentences share ``prefix`` (subject and attractor) and differ only in the verb's number,
    so ``good`` and ``bad`` are the continuations after it (the prefix's log-probability cancels,
    so comparing continuations is comparing whole sentences). About half the pairs have a singular
    subject and a plural attractor, half the reverse."""
    pairs = []
    for name, subjects, attractors, verb, completions, prefix in _AGREEMENT_TEMPLATES:
        combos = [(s, a, c, plural) for s in subjects for a in attractors for c in completions for plural in (0, 1)
                  if s[0] != a[0]]
        for s, a, completion, plural in random.Random(f"agreement-{name}-{seed}").sample(combos, per_template):
            attractor = a[1 - plural]  # the other number
            text = prefix.format(s=s[plural], a=attractor)
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


# Country capitals: (country as it reads after "The capital of", capital): 200 sovereign states
# and territories whose capital is not in dispute. Left out on purpose: countries whose capital is
# disputed, split or moving (Bolivia, South Africa, Israel, Palestine, Sri Lanka, Cote d'Ivoire,
# Benin, Eswatini, Burundi, Equatorial Guinea, Indonesia, Kiribati, Nauru, American Samoa),
# city-states named like their capital (Singapore, Monaco, Vatican City, San Marino, Luxembourg,
# Djibouti) and Georgia (read as the US state).
CAPITALS = [
    # Africa
    ("Algeria", "Algiers"), ("Angola", "Luanda"), ("Botswana", "Gaborone"),
    ("Burkina Faso", "Ouagadougou"), ("Cape Verde", "Praia"), ("Cameroon", "Yaoundé"),
    ("the Central African Republic", "Bangui"), ("Chad", "N'Djamena"),
    ("the Comoros", "Moroni"), ("the Democratic Republic of the Congo", "Kinshasa"),
    ("the Republic of the Congo", "Brazzaville"), ("Egypt", "Cairo"), ("Eritrea", "Asmara"),
    ("Ethiopia", "Addis Ababa"), ("Gabon", "Libreville"), ("the Gambia", "Banjul"),
    ("Ghana", "Accra"), ("Guinea", "Conakry"), ("Guinea-Bissau", "Bissau"),
    ("Kenya", "Nairobi"), ("Lesotho", "Maseru"), ("Liberia", "Monrovia"),
    ("Libya", "Tripoli"), ("Madagascar", "Antananarivo"), ("Malawi", "Lilongwe"),
    ("Mali", "Bamako"), ("Mauritania", "Nouakchott"), ("Mauritius", "Port Louis"),
    ("Morocco", "Rabat"), ("Mozambique", "Maputo"), ("Namibia", "Windhoek"),
    ("Niger", "Niamey"), ("Nigeria", "Abuja"), ("Rwanda", "Kigali"),
    ("Sao Tome and Principe", "São Tomé"), ("Senegal", "Dakar"),
    ("Seychelles", "Victoria"), ("Sierra Leone", "Freetown"), ("Somalia", "Mogadishu"),
    ("South Sudan", "Juba"), ("Sudan", "Khartoum"), ("Tanzania", "Dodoma"),
    ("Togo", "Lomé"), ("Tunisia", "Tunis"), ("Uganda", "Kampala"),
    ("Zambia", "Lusaka"), ("Zimbabwe", "Harare"),
    # The Americas
    ("Antigua and Barbuda", "St. John's"), ("Argentina", "Buenos Aires"),
    ("the Bahamas", "Nassau"), ("Barbados", "Bridgetown"), ("Belize", "Belmopan"),
    ("Bermuda", "Hamilton"), ("Brazil", "Brasília"), ("Canada", "Ottawa"),
    ("Chile", "Santiago"), ("Colombia", "Bogotá"), ("Costa Rica", "San José"),
    ("Cuba", "Havana"), ("Dominica", "Roseau"),
    ("the Dominican Republic", "Santo Domingo"), ("Ecuador", "Quito"),
    ("El Salvador", "San Salvador"), ("Greenland", "Nuuk"), ("Grenada", "St. George's"),
    ("Guatemala", "Guatemala City"), ("Guyana", "Georgetown"),
    ("Haiti", "Port-au-Prince"), ("Honduras", "Tegucigalpa"), ("Jamaica", "Kingston"),
    ("Mexico", "Mexico City"), ("Nicaragua", "Managua"), ("Panama", "Panama City"),
    ("Paraguay", "Asunción"), ("Peru", "Lima"), ("Puerto Rico", "San Juan"),
    ("Saint Kitts and Nevis", "Basseterre"), ("Saint Lucia", "Castries"),
    ("Saint Vincent and the Grenadines", "Kingstown"), ("Suriname", "Paramaribo"),
    ("Trinidad and Tobago", "Port of Spain"), ("the United States", "Washington, D.C."),
    ("Uruguay", "Montevideo"), ("Venezuela", "Caracas"),
    ("Anguilla", "The Valley"), ("Aruba", "Oranjestad"),
    ("the British Virgin Islands", "Road Town"), ("the Cayman Islands", "George Town"),
    ("Curaçao", "Willemstad"), ("the Falkland Islands", "Stanley"),
    ("Sint Maarten", "Philipsburg"), ("the Turks and Caicos Islands", "Cockburn Town"),
    ("the United States Virgin Islands", "Charlotte Amalie"),
    # Europe
    ("Albania", "Tirana"), ("Andorra", "Andorra la Vella"), ("Austria", "Vienna"),
    ("Belarus", "Minsk"), ("Belgium", "Brussels"), ("Bosnia and Herzegovina", "Sarajevo"),
    ("Bulgaria", "Sofia"), ("Croatia", "Zagreb"), ("Cyprus", "Nicosia"),
    ("the Czech Republic", "Prague"), ("Denmark", "Copenhagen"), ("Estonia", "Tallinn"),
    ("the Faroe Islands", "Tórshavn"), ("Finland", "Helsinki"), ("France", "Paris"),
    ("Germany", "Berlin"), ("Greece", "Athens"), ("Hungary", "Budapest"),
    ("Iceland", "Reykjavik"), ("Ireland", "Dublin"), ("Italy", "Rome"),
    ("Kosovo", "Pristina"), ("Latvia", "Riga"), ("Liechtenstein", "Vaduz"),
    ("Lithuania", "Vilnius"), ("Malta", "Valletta"), ("Moldova", "Chisinau"),
    ("Montenegro", "Podgorica"), ("the Netherlands", "Amsterdam"),
    ("North Macedonia", "Skopje"), ("Northern Ireland", "Belfast"), ("Norway", "Oslo"),
    ("Poland", "Warsaw"), ("Portugal", "Lisbon"), ("Romania", "Bucharest"),
    ("Russia", "Moscow"), ("Scotland", "Edinburgh"), ("Serbia", "Belgrade"),
    ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Spain", "Madrid"),
    ("Sweden", "Stockholm"), ("Switzerland", "Bern"), ("Ukraine", "Kyiv"),
    ("the United Kingdom", "London"), ("Wales", "Cardiff"),
    ("Guernsey", "St. Peter Port"), ("the Isle of Man", "Douglas"), ("Jersey", "St. Helier"),
    # Asia
    ("Afghanistan", "Kabul"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"),
    ("Bahrain", "Manama"), ("Bangladesh", "Dhaka"), ("Bhutan", "Thimphu"),
    ("Brunei", "Bandar Seri Begawan"), ("Cambodia", "Phnom Penh"), ("China", "Beijing"),
    ("East Timor", "Dili"), ("India", "New Delhi"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Japan", "Tokyo"), ("Jordan", "Amman"), ("Kazakhstan", "Astana"),
    ("Kuwait", "Kuwait City"), ("Kyrgyzstan", "Bishkek"), ("Laos", "Vientiane"),
    ("Lebanon", "Beirut"), ("Malaysia", "Kuala Lumpur"), ("the Maldives", "Malé"),
    ("Mongolia", "Ulaanbaatar"), ("Myanmar", "Naypyidaw"), ("Nepal", "Kathmandu"),
    ("North Korea", "Pyongyang"), ("Oman", "Muscat"), ("Pakistan", "Islamabad"),
    ("the Philippines", "Manila"), ("Qatar", "Doha"), ("Saudi Arabia", "Riyadh"),
    ("South Korea", "Seoul"), ("Syria", "Damascus"), ("Taiwan", "Taipei"),
    ("Tajikistan", "Dushanbe"), ("Thailand", "Bangkok"), ("Turkey", "Ankara"),
    ("Turkmenistan", "Ashgabat"), ("the United Arab Emirates", "Abu Dhabi"),
    ("Uzbekistan", "Tashkent"), ("Vietnam", "Hanoi"), ("Yemen", "Sanaa"),
    # Oceania
    ("Australia", "Canberra"), ("Fiji", "Suva"), ("the Marshall Islands", "Majuro"),
    ("Micronesia", "Palikir"), ("New Zealand", "Wellington"), ("Palau", "Ngerulmud"),
    ("Papua New Guinea", "Port Moresby"), ("Samoa", "Apia"),
    ("the Solomon Islands", "Honiara"), ("Tonga", "Nuku'alofa"), ("Tuvalu", "Funafuti"),
    ("Vanuatu", "Port Vila"), ("the Cook Islands", "Avarua"),
    ("French Polynesia", "Papeete"), ("Guam", "Hagåtña"), ("New Caledonia", "Nouméa"),
]


def capital_questions(seed: int = SEED) -> list[dict]:
    """``{"country", "choices", "gold"}`` per country: the capital and three distractors drawn
    from the other capitals by a per-country seed, in a seeded order; ``gold`` is the capital's
    index."""
    questions = []
    for country, capital in CAPITALS:
        rng = random.Random(f"capitals-{country}-{seed}")
        others = sorted(c for _, c in CAPITALS if c != capital)
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
