#!/usr/bin/env python3
"""Builds tests/data/grading-cases.jsonl: labelled answer-grading cases for agreement tests.

Each case pairs a reference answer taken from a dataset file with a synthetic model-style
completion, and carries two labels:

  toolkit_correct  the verdict of the Qwen2.5-Math evaluation toolkit (its `evaluation/` folder:
                   parser.extract_answer / strip_string / parse_ground_truth, grader.math_equal),
                   computed the way its math_eval.py + evaluate.py pipeline does it;
  expected         what a careful human grader would say, fixed by how the case was built
                   (a rewrite into an equivalent form is correct, a near miss is not);
  toolkit_error    where the two differ, the class of the toolkit's error (docs/grading.md);
  kvbench_corrects whether kvbench gives `expected` on that class (true) or, sharing the
                   toolkit's rule, the toolkit's verdict (false); null where the two agree.

A disagreement that no class explains stops the script before anything is written.

The toolkit is NOT part of this repository. Point --toolkit at a directory holding a copy of
its `evaluation/` folder (parser.py, grader.py, utils.py, examples.py, ...) and run this script
with a Python that has the toolkit's dependencies installed (sympy 1.12, antlr4 runtime 4.11.1,
latex2sympy2 from the toolkit's latex2sympy/ folder, word2number, regex, numpy). This script
itself uses the standard library only.

    <venv>/bin/python scripts/grading-cases.py [--toolkit DIR] [--data-dir DIR] [--out FILE]

No problem or question text of any dataset is written out: only the reference answers (the
dataset's answer field, as kvbench's loader passes it; for MATH the last \\boxed{} of the
solution) and synthetic predictions. Question texts are read only to pick plausible units and
to skip percent-style rows for the percent near misses.

Output is deterministic for a given --seed, apart from toolkit calls that hit the time limit
(recorded with "toolkit_timeout": true and toolkit_correct false, as evaluate.py scores them).
"""

import argparse
import json
import multiprocessing
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DATASETS = ["gsm8k", "math500", "math", "aime24", "aime25", "amc23", "gaokao2023en", "gpqa_diamond"]

# How many cases to keep per dataset, and how many rows to draw candidates from.
TARGETS = {
    "gsm8k": 360, "math500": 330, "math": 360, "aime24": 90, "aime25": 90,
    "amc23": 100, "gaokao2023en": 300, "gpqa_diamond": 160,
}
ROW_SAMPLE = {"gsm8k": 500, "math": 700}
RARE_FORMS = re.compile(r"\\(sin|cos|tan|cot|sec|csc)|\\infty|matrix|\\text\{\s*\(|\\%|^\\\$|"
                        r"^[^a-zA-Z]*i[^a-zA-Z]*$|\\\{|\\cup")

# Datasets the toolkit's parse_ground_truth knows by name. The others (math500, aime25,
# gpqa_diamond) are read with its generic answer-field branch (the one aime24/amc23 use:
# gt = strip_string(example["answer"])); extract_answer gets the dataset's own name, which it
# does not special-case.
TOOLKIT_GT_NAMES = {"gsm8k", "math", "aime24", "amc23", "gaokao2023en"}
GENERIC_GT_NAME = "aime24"

# evaluate.py maps math_equal over a pebble ProcessPool with timeout=3 (seconds).
EQUAL_TIMEOUT_S = 3.0
EXTRACT_TIMEOUT_S = 20.0

# math_eval.py's stop words for the default prompt types.
STOP_WORDS = ["</s>", "<|im_end|>", "<|endoftext|>"]

# --------------------------------------------------------------------------------------------
# Reading the datasets


def last_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, braces balanced; None if none."""
    for cmd in ("\\boxed", "\\fbox"):
        i = text.rfind(cmd)
        if i < 0:
            continue
        j = i + len(cmd)
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            depth = 0
            for k in range(j, len(text)):
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[j + 1:k]
            return None
        return text[j:].split("$")[0].strip() or None
    return None


def number_to_string(v):
    """How serde_json's Number::to_string renders a JSON number (27.0 -> "27.0")."""
    if isinstance(v, bool):
        raise ValueError("bool")
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def load_rows(data_dir, ds):
    path = Path(data_dir) / ds / "test.jsonl"
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            raw = json.loads(line)
            question = raw.get("question") or raw.get("problem") or ""
            if ds == "math":
                ref = last_boxed(raw["solution"])
                if ref is None:
                    continue
                core = ref.strip()
            elif ds == "gsm8k":
                ref = raw["answer"]
                core = ref.split("####")[-1].strip()
            elif ds == "amc23":
                v = raw["answer"]
                ref = v if isinstance(v, str) else number_to_string(v)
                fv = float(v)
                core = str(int(fv)) if fv.is_integer() else repr(fv)
            elif ds == "gaokao2023en":
                ref = raw["answer"]
                core = ref.replace("$", "").strip()
                if re.search(r"[\u4e00-\u9fff]|solution|\n", core) or not core:
                    continue
            else:
                ref = raw["answer"]
                core = str(ref).strip()
            rows.append({"row": i, "raw": raw, "reference": ref, "core": core, "question": question})
    return rows


# --------------------------------------------------------------------------------------------
# Numbers


def parse_number(s):
    """(Fraction, info) for plain numbers, thousands-separated integers, decimals and simple
    integer fractions; None otherwise."""
    t = s.strip()
    neg = False
    if t.startswith("-"):
        neg, t = True, t[1:].strip()
    elif t.startswith("+"):
        t = t[1:].strip()
    info = {"commas": False, "decimal": False, "frac": False, "lead_zero": False}
    # no space after the comma: "$48$, $384$" is a list of two answers
    m = re.fullmatch(r"\d{1,3}(?:(?:,|\{,\}|,\\!\s*)\d{3})+(\.\d+)?", t)
    if m:
        info["commas"] = True
        info["decimal"] = m.group(1) is not None
        v = Fraction(re.sub(r"[^\d.]", "", t))
    elif re.fullmatch(r"\d+", t):
        v = Fraction(int(t))
        info["lead_zero"] = len(t) > 1 and t[0] == "0"
    elif re.fullmatch(r"\d*\.\d+", t):
        v = Fraction(t)
        info["decimal"] = True
    else:
        m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", t) or re.fullmatch(r"\\[dt]?frac(\d)(\d)", t) \
            or re.fullmatch(r"(-?\d+)/(\d+)", t)
        if not m or int(m.group(2)) == 0:
            return None
        v = Fraction(int(m.group(1)), int(m.group(2)))
        info["frac"] = True
    return (-v if neg else v), info


def fmt_dec(v):
    """Exact decimal string of v, or None when it does not terminate."""
    q = v.denominator
    k2 = k5 = 0
    while q % 2 == 0:
        q //= 2
        k2 += 1
    while q % 5 == 0:
        q //= 5
        k5 += 1
    if q != 1:
        return None
    k = max(k2, k5)
    n = abs(v) * 10 ** k
    assert n.denominator == 1
    digits = str(int(n))
    if k:
        digits = digits.rjust(k + 1, "0")
        digits = digits[:-k] + "." + digits[-k:]
    return ("-" if v < 0 else "") + digits


def fmt_frac(v, cmd="\\frac"):
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}{cmd}{{{abs(v.numerator)}}}{{{v.denominator}}}"


def render_like(v, info):
    if v.denominator == 1:
        return str(v.numerator)
    if info.get("decimal"):
        return fmt_dec(v) or fmt_frac(v)
    return fmt_frac(v)


def render_decimal_any(v):
    return fmt_dec(v) or fmt_frac(v)


ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n, hyphen=True):
    if n < 0:
        return None
    if n < 20:
        return ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return TENS[t] + ((("-" if hyphen else " ") + ONES[o]) if o else "")
    if n < 1000:
        h, r = divmod(n, 100)
        return ONES[h] + " hundred" + ((" " + words(r, hyphen)) if r else "")
    if n < 10 ** 6:
        th, r = divmod(n, 1000)
        return words(th, hyphen) + " thousand" + ((" " + words(r, hyphen)) if r else "")
    return None


# --------------------------------------------------------------------------------------------
# Structure helpers for LaTeX answers


def split_top(s, sep=","):
    parts, depth, cur = [], 0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def bracketed(s):
    """(open, inner, close) when s is one bracket group (...), [...), etc.; else None."""
    t = s.replace("\\left", "").replace("\\right", "").strip()
    if len(t) < 2 or t[0] not in "([" or t[-1] not in ")]":
        return None
    depth = 0
    for k, c in enumerate(t):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and k != len(t) - 1:
                return None
    return t[0], t[1:-1], t[-1]


def squeeze(s):
    """Drops spaces that do not end a LaTeX command name."""
    return re.sub(r"(?<![A-Za-z])\s+", "", s)


UNIT_LETTERS = list("acdghlmost")  # single letters in the toolkit's unit_texts list


def other_core(pool, core, rng):
    choices = [c for c in pool if c != core and c.replace(" ", "") != core.replace(" ", "")]
    return rng.choice(choices) if choices else None


UNIT_WORDS = ["dollars", "cents", "miles", "minutes", "hours", "days", "weeks", "years", "pounds",
              "feet", "inches", "meters", "centimeters", "kilograms", "liters", "gallons", "eggs",
              "cookies", "students", "people", "books", "apples", "pages", "cups", "square units",
              "square feet", "square inches", "square meters", "square centimeters", "cubic feet",
              "cubic inches", "seconds", "cm", "km", "units"]


def ask_sentence(question):
    """The sentence of the question that asks for the answer (the last one with a question mark,
    else the last sentence)."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", question.strip()) if p.strip()]
    asks = [p for p in parts if "?" in p]
    return (asks or parts or [""])[-1]


def pick_unit(question):
    """A unit the answer is asked in, read from the asking sentence; None when unclear."""
    last = ask_sentence(question).lower()
    m = re.search(r"how many ((?:square |cubic )?[a-z]+)", last)
    if m and m.group(1) in UNIT_WORDS:
        return m.group(1)
    m = re.search(r"\bin ((?:square |cubic )?[a-z]+)\b", last)
    if m and m.group(1) in UNIT_WORDS:
        return m.group(1)
    if re.search(r"\$\s?\d", question) and re.search(
            r"how much (money|did|does|do|will|would|is|was|more|less)\b.*\b(cost|spend|spent|pay|paid|earn|earned|make|made|save|saved|charge|owe|profit|worth)|how much money|how many dollars",
            last):
        return "dollars"
    return None


def asks_degrees(question):
    last = ask_sentence(question).lower()
    return bool(re.search(r"\bdegrees?\b", last) and not re.search(r"degree of|polynomial", last))


def percentish(question):
    """The question mentions percentages somewhere."""
    return bool(re.search(r"percent|%", question, re.I))


ASKS_PERCENT = re.compile(r"\b(what|which)\s+(is\s+the\s+)?percent(age)?\b|\bhow many percent\b|"
                          r"\bas a percent(age)?\b|\bin percent\b|\bpercentage\b[^.?]*\?|\bpercent\b[^.?]*\?$", re.I)


def asks_percent(question):
    """The question asks for a percentage, so that "N%" answers it."""
    return bool(ASKS_PERCENT.search(question))


# --------------------------------------------------------------------------------------------
# Case generators. Each returns a list of (kind, answer_or_text, expected, is_text).


def T(kind, ans):
    return (kind, ans, True, False)


def F(kind, ans):
    return (kind, ans, False, False)


def numeric_cases(ctx, v, info):
    out = []
    rng, q, ds, core = ctx["rng"], ctx["question"], ctx["ds"], ctx["core"]
    pct = percentish(q)
    if v.denominator == 1:
        n = v.numerator
        if abs(n) >= 1000:
            out.append(T("rewrite-thousands", f"{n:,}"))
            out.append(T("rewrite-thousands", f"{n:,}".replace(",", "{,}")))
            out.append(T("rewrite-thousands", f"{n:,}".replace(",", "\\,")))
        if info["commas"]:
            out.append(T("rewrite-thousands", str(n)))
        w = words(n) if 0 <= n < 10 ** 6 and (n <= 100 or n % 100 == 0) else None
        if w:
            out.append(T("rewrite-words", w))
            out.append(T("rewrite-words", "\\text{" + w + "}"))
            out.append(T("rewrite-words", w[0].upper() + w[1:]))
            if "-" in w:
                out.append(T("rewrite-words", words(n, hyphen=False)))
        out.append(T("rewrite-decimal-trailing", f"{n}.0"))
        out.append(T("rewrite-decimal-trailing", f"{n}.00"))
        if info["lead_zero"]:
            out.append(T("rewrite-leading-zeros", str(n)))
        elif ds in ("aime24", "aime25") and 0 <= n < 100:
            out.append(T("rewrite-leading-zeros", f"{n:03d}"))
        out.append(T("rewrite-x-prefix", f"x = {n}"))
        out.append(T("rewrite-x-prefix", f"n={n}"))
        out.append(T("rewrite-fraction", f"\\frac{{{2 * n}}}{{2}}"))
        out.append(T("rewrite-text-wrapper", f"\\text{{{n}}}"))
        out.append(T("rewrite-text-wrapper", f"\\mathbf{{{n}}}"))
        unit = pick_unit(q)
        if unit:
            out.append(T("rewrite-units", f"{n} \\text{{ {unit}}}"))
            out.append(T("rewrite-units", f"{n} {unit}"))
            if unit == "dollars":
                out.append(T("rewrite-units", f"\\${n}"))
                out.append(T("rewrite-units", f"\\${n:,}.00"))
        if asks_percent(q):
            out.append(T("rewrite-percent", f"{n}\\%"))
            out.append(T("rewrite-percent", f"{n}%"))
            out.append(T("rewrite-percent", f"{n} \\text{{ percent}}"))
        if asks_degrees(q):
            out.append(T("rewrite-degrees", f"{n}^\\circ"))
            out.append(T("rewrite-degrees", f"{n}^{{\\circ}}"))
            out.append(T("rewrite-degrees", f"{n}°"))
        # near misses
        out.append(F("near-off-by-one", str(n + 1)))
        out.append(F("near-off-by-one", str(n - 1)))
        if n != 0:
            out.append(F("near-sign", str(-n)))
            out.append(F("near-times-ten", str(n * 10)))
            out.append(F("near-times-ten", render_decimal_any(v / 10)))
            if not pct:
                out.append(F("near-div-100", render_decimal_any(v / 100)))
                out.append(F("near-times-100", str(n * 100)))
            out.append(F("near-close-decimal", f"{n * (1 + 5e-5):.6f}".rstrip("0").rstrip(".")))
            out.append(F("near-mixed-number", f"{'-' if n < 0 else ''}{2 * abs(n)}\\frac{{1}}{{2}}"))
        if abs(n) > 10000:
            d = rng.randint(1, max(1, int(abs(n) * 9e-5)))
            out.append(F("near-close-integer", str(n + rng.choice([-1, 1]) * d)))
        if abs(n) >= 1000:
            # a misplaced separator reads as a different number
            digits = str(abs(n))
            out.append(F("near-thousands-misplaced", ("-" if n < 0 else "") + digits[:-2] + "," + digits[-2:] + "0"))
    else:
        p, qd = v.numerator, v.denominator
        sign = "-" if v < 0 else ""
        ap = abs(p)
        d = fmt_dec(v)
        if d:
            out.append(T("rewrite-fraction", d))
            if d.lstrip("-").startswith("0."):
                out.append(T("rewrite-fraction", d.replace("0.", ".", 1)))
        if info["decimal"] or not info["frac"]:
            out.append(T("rewrite-fraction", fmt_frac(v)))
            out.append(T("rewrite-decimal-trailing", (d or core) + "0"))
        out.append(T("rewrite-fraction", f"{sign}{ap}/{qd}"))
        out.append(T("rewrite-dfrac", fmt_frac(v, "\\dfrac")))
        out.append(T("rewrite-dfrac", fmt_frac(v, "\\tfrac")))
        if ap < 10 and qd < 10:
            out.append(T("rewrite-fraction", f"{sign}\\frac{ap}{qd}"))
        out.append(T("rewrite-fraction", f"{sign}\\frac{{{2 * ap}}}{{{2 * qd}}}"))
        if v < 0:
            out.append(T("rewrite-fraction", f"\\frac{{-{ap}}}{{{qd}}}"))
        if abs(v) > 1:
            whole, rem = divmod(ap, qd)
            out.append(T("rewrite-mixed-number", f"{sign}{whole}\\frac{{{rem}}}{{{qd}}}"))
            out.append(T("rewrite-mixed-number", f"{sign}{whole} \\tfrac{{{rem}}}{{{qd}}}"))
        unit = pick_unit(q)
        if unit:
            out.append(T("rewrite-units", f"{render_like(v, info)} \\text{{ {unit}}}"))
        # near misses
        out.append(F("near-off-by-one", render_like(v + 1, info)))
        out.append(F("near-off-by-one", fmt_frac(Fraction(p + 1, qd)) if not info["decimal"] else render_like(v - 1, info)))
        out.append(F("near-sign", render_like(-v, info)))
        out.append(F("near-times-ten", render_like(v * 10, info)))
        if abs(v) != 1:
            out.append(F("near-reciprocal", render_like(1 / v, info)))
        if not pct:
            out.append(F("near-div-100", render_decimal_any(v / 100)))
            out.append(F("near-times-100", render_like(v * 100, info)))
        if not d:
            x = float(v)
            out.append(F("near-rounded-decimal", f"{x:.2f}"))
            # six places: a rounding the toolkit's tolerance is there to accept
            out.append(T("rewrite-rounded-decimal", f"{x:.6f}"))
        if ap < 2 * qd:
            out.append(F("near-mixed-number", f"{sign}2\\frac{{{ap}}}{{{2 * qd}}}"))
        out.append(F("near-close-decimal", f"{float(v) * (1 + 3e-5):.7f}"))
    return out


LETTERS = "ABCD"


def letter_cases(ctx, letter, wrapped):
    """Multiple-choice answers: gpqa_diamond letters, gaokao letters, MATH's \\text{(B)}."""
    rng = ctx["rng"]
    others = [c for c in ("ABCDE" if wrapped else LETTERS) if c != letter]
    out = [
        T("rewrite-choice-letter", letter),
        T("rewrite-choice-letter", f"({letter})"),
        T("rewrite-choice-letter", f"\\text{{{letter}}}"),
        T("rewrite-choice-letter", f"\\text{{({letter})}}"),
        T("rewrite-choice-letter", f"\\textbf{{({letter})}}"),
        T("rewrite-choice-letter", f"\\mathrm{{({letter})}}"),
        T("rewrite-choice-letter", f"({letter.lower()})"),
        T("rewrite-choice-letter", f"\\text{{Option {letter}}}"),
    ]
    for w in rng.sample(others, 2):
        out.append(F("near-wrong-letter", w))
        out.append(F("near-wrong-letter", f"\\text{{({w})}}"))
    L, W = letter, rng.choice(others)
    texts = [
        ("text-answer-is", f"After comparing the options, the answer is ({L}).", True),
        ("text-answer-is", f"Weighing each option in turn, the answer is {L}.", True),
        ("text-answer-is", f"The correct choice is {L}.", True),
        ("text-answer-is", f"After comparing the options, the answer is ({W}).", False),
        ("text-answer-is", f"Answer: {L}", True),
        ("text-answer-is", f"**Final Answer: ({L})**", True),
        ("text-answer-is", f"Answer: {W}", False),
        ("text-choice-article", f"I would go with option {L}, since it gives a consistent picture.", True),
        ("text-choice-article", f"Option {L} is correct; each of the others leads to a contradiction.", True),
        ("text-choice-article", f"Option {W} is correct; each of the others leads to a contradiction.", False),
        ("text-think", f"<think>\nOption {W} looks tempting: \\boxed{{{W}}}. But that ignores a constraint.\n</think>\n\nThe answer is \\boxed{{{L}}}.", True),
        ("text-think", f"<think>\nI first thought \\boxed{{{L}}}, but checking again it fails.\n</think>\n\nThe answer is \\boxed{{{W}}}.", False),
        ("text-think-unboxed-final", f"<think>\nTentatively \\boxed{{{W}}}; that cannot be right.\n</think>\n\nThe answer is ({L}).", True),
        ("text-several-boxed", f"It is not \\boxed{{{W}}}; it is \\boxed{{{L}}}.", True),
        ("text-hedged", f"The answer is either ({L}) or ({W}); I cannot decide.", False),
        ("text-no-answer", "None of the options seems to match my result, so I cannot choose.", False),
        ("text-unclosed-box", f"So the answer is \\boxed{{{L}", True),
        ("text-answer-is-trailing", f"The answer is ({L}). All other options contradict the given data.", True),
    ]
    for kind, text, exp in texts:
        out.append((kind, text, exp, True))
    return out


def symbolic_cases(ctx):
    """Rewrites and near misses of LaTeX answers that are not plain numbers."""
    out = []
    rng, core, ds, q = ctx["rng"], ctx["core"], ctx["ds"], ctx["question"]
    c = core

    # multiple choice wrapped in \text{(X)}
    m = re.fullmatch(r"\\text(?:bf)?\{\s*\(([A-E])\)\s*\}|\(([A-E])\)", c)
    if m:
        return letter_cases(ctx, m.group(1) or m.group(2), True)

    # percent answers 25\%
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*\\%", c)
    if m:
        v = Fraction(m.group(1))
        out += [T("rewrite-percent", m.group(1)), T("rewrite-percent", m.group(1) + "%"),
                T("rewrite-percent", render_decimal_any(v / 100)),
                T("rewrite-percent", m.group(1) + " \\text{ percent}"),
                F("near-off-by-one", f"{render_decimal_any(v + 1)}\\%"),
                F("near-times-ten", f"{render_decimal_any(v * 10)}\\%")]
        return out

    # dollars \$18.90 / \$15,\!000
    m = re.fullmatch(r"\\\$\s*(.+)", c)
    if m and parse_number(m.group(1)):
        v, info = parse_number(m.group(1))
        out += [T("rewrite-units", m.group(1)), T("rewrite-units", m.group(1) + " dollars"),
                T("rewrite-units", m.group(1) + " \\text{ dollars}"),
                F("near-off-by-one", "\\$" + render_like(v + 1, info)),
                F("near-times-ten", "\\$" + render_decimal_any(v * 10))]
        if not info["commas"] and v.denominator == 1 and v >= 1000:
            out.append(T("rewrite-thousands", f"\\${v.numerator:,}"))
        return out

    # degrees 30^\circ
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*\^\s*\{?\\circ\}?", c)
    if m:
        n = m.group(1)
        v = Fraction(n)
        out += [T("rewrite-degrees", n), T("rewrite-degrees", n + "°"),
                T("rewrite-degrees", n + " \\text{ degrees}"), T("rewrite-degrees", n + "^{\\circ}"),
                F("near-off-by-one", render_decimal_any(v + 1) + "^\\circ"),
                F("near-supplement", render_decimal_any(180 - v) + "^\\circ") if v != 90 else F("near-off-by-one", render_decimal_any(v - 1) + "^\\circ")]
        return out

    # number followed by a text unit: 575\text{ students}
    m = re.fullmatch(r"(.+?)\s*\\(?:text|mbox)\{\s*([A-Za-z][A-Za-z .]*?)\s*\}(\^2)?", c)
    if m and parse_number(m.group(1)):
        v, info = parse_number(m.group(1))
        unit = m.group(2)
        out += [T("rewrite-units", m.group(1)), T("rewrite-units", f"{m.group(1)} {unit}"),
                F("near-off-by-one", render_like(v + 1, info) + f" \\text{{ {unit}}}"),
                F("near-times-ten", render_decimal_any(v * 10))]
        if unit.strip().lower() in ("a.m.", "p.m.", "am", "pm"):
            flip = {"a.m.": "p.m.", "p.m.": "a.m.", "am": "pm", "pm": "am"}[unit.strip().lower()]
            out.append(F("near-unit-word", f"{m.group(1)} \\text{{ {flip}}}"))
            out.append(F("near-unit-word", f"{m.group(1)} {flip}"))
        return out

    # plain text answers \text{east}, \text{Navin}
    m = re.fullmatch(r"\\text(?:bf)?\{([A-Za-z][A-Za-z ,'.-]*)\}", c)
    if m:
        word = m.group(1)
        out += [T("rewrite-text-wrapper", word), T("rewrite-text-wrapper", "\\textbf{" + word + "}"),
                T("rewrite-text-wrapper", word.capitalize() if word[0].islower() else word.lower())]
        flips = {"east": "west", "west": "east", "north": "south", "south": "north"}
        if word.lower() in flips:
            out.append(F("near-unit-word", "\\text{" + flips[word.lower()] + "}"))
            out.append(F("near-unit-word", flips[word.lower()]))
        texts = [x for x in ctx["pool"] if x.startswith("\\text{") and x != c and "(" not in x]
        if texts:
            out.append(F("near-other-text", rng.choice(texts)))
        return out

    # times like 5am
    m = re.fullmatch(r"(\d+)\s*(am|pm)", c)
    if m:
        flip = "pm" if m.group(2) == "am" else "am"
        out += [T("rewrite-units", f"{m.group(1)} {m.group(2)}"), T("rewrite-units", f"{m.group(1)}\\text{{ {m.group(2)}}}"),
                F("near-unit-word", f"{m.group(1)} {flip}"), F("near-unit-word", f"{m.group(1)}{flip}")]
        return out

    # matrices / vectors
    if "matrix}" in c:
        body = re.sub(r"\\(begin|end)\{[pb]matrix\}", "", c).strip()
        rows = [r.strip() for r in body.split("\\\\") if r.strip()]
        cells = [[x.strip() for x in r.split("&")] for r in rows]
        out.append(T("rewrite-matrix", c.replace("pmatrix", "bmatrix")))
        out.append(T("rewrite-matrix", c.replace(" ", "")))
        fr = re.sub(r"(?<![\w{])(-?)(\d+)/(\d+)", r"\1\\frac{\2}{\3}", c)
        if fr != c:
            out.append(T("rewrite-matrix", fr))
        if all(len(r) == 1 for r in cells) and len(cells) >= 2:
            out.append(T("rewrite-matrix-tuple", "(" + ", ".join(r[0] for r in cells) + ")"))
            if cells[0][0] != cells[1][0]:
                sw = [r[0] for r in cells]
                sw[0], sw[1] = sw[1], sw[0]
                out.append(F("near-swapped", "\\begin{pmatrix} " + " \\\\ ".join(sw) + " \\end{pmatrix}"))
        elif len(cells) >= 2 and cells[0] != cells[1]:
            sw = list(rows)
            sw[0], sw[1] = sw[1], sw[0]
            out.append(F("near-swapped", "\\begin{pmatrix} " + " \\\\ ".join(sw) + " \\end{pmatrix}"))
        first = cells[0][0]
        neg = first[1:] if first.startswith("-") else "-" + first
        if first not in ("0", "-0"):
            out.append(F("near-sign", c.replace(first, neg, 1)))
        return out

    # set-builder {x | a < x < b} (gaokao) <-> interval
    m = re.fullmatch(r"\\\{\s*x\s*\|\s*(-?[\w\\{}.]+?)\s*(<|\\leq?)\s*x\s*(<|\\leq?)\s*(-?[\w\\{}.]+?)\s*\\\}", c)
    if m:
        lo, op1, op2, hi = m.groups()
        lb = "(" if op1 == "<" else "["
        rb = ")" if op2 == "<" else "]"
        out.append(T("rewrite-interval", f"{lb}{lo}, {hi}{rb}"))
        out.append(F("near-brackets", f"{'[' if lb == '(' else '('}{lo}, {hi}{rb}"))
        out.append(F("near-brackets", f"{lb}{lo}, {hi}{']' if rb == ')' else ')'}"))
        return out

    br = bracketed(c)
    tops = split_top(c)
    is_interval = br is not None and len(split_top(br[1])) == 2 and ("[" in c or "]" in c or "\\infty" in c)
    is_union = "\\cup" in c

    if "\\infty" in c:
        out.append(T("rewrite-interval", c.replace("\\infty", "inf")))
        out.append(T("rewrite-interval", c.replace("\\infty", "∞")))
        if "+\\infty" in c:
            out.append(T("rewrite-interval", c.replace("+\\infty", "\\infty")))
        else:
            out.append(T("rewrite-interval", re.sub(r"(?<!-)\\infty", "+\\\\infty", c)))
    if is_interval and not is_union:
        lo, hi = [x.strip() for x in split_top(br[1])]
        lt_hi = "<" if br[2] == ")" else "\\le"
        lt_lo = "<" if br[0] == "(" else "\\le"
        gt_lo = ">" if br[0] == "(" else "\\ge"
        if lo.startswith("-\\infty") and "infty" not in hi:
            out.append(T("rewrite-interval", f"x {lt_hi} {hi}"))
        elif "infty" in hi and "infty" not in lo:
            out.append(T("rewrite-interval", f"x {gt_lo} {lo}"))
        elif "infty" not in lo and "infty" not in hi:
            out.append(T("rewrite-interval", f"{lo} {lt_lo} x {lt_hi} {hi}"))
    if is_interval or is_union:
        # flip one finite-end bracket
        spots = [k for k, ch in enumerate(c) if ch in "[]" or
                 (ch == "(" and not c[k + 1:].lstrip().startswith("-\\infty")) or
                 (ch == ")" and not c[:k].rstrip().endswith("infty"))]
        spots = [k for k in spots if not c[:k].endswith("\\left") and not c[:k].endswith("\\right")
                 and not c[max(0, k - 5):k].endswith("left") and not c[max(0, k - 6):k].endswith("right")]
        if spots:
            k = rng.choice(spots)
            flip = {"(": "[", "[": "(", ")": "]", "]": ")"}[c[k]]
            out.append(F("near-brackets", c[:k] + flip + c[k + 1:]))
        out.append(T("rewrite-spacing", squeeze(c).replace(",", ", ")))
    elif br is not None and len(split_top(br[1])) >= 2:
        # points / tuples
        parts = [x.strip() for x in split_top(br[1])]
        inner = ", ".join(parts)
        out.append(T("rewrite-spacing", f"{br[0]}{squeeze(inner)}{br[2]}".replace(",", ", ")))
        out.append(T("rewrite-left-right", f"\\left{br[0]} {inner} \\right{br[2]}" if "\\left" not in c else f"{br[0]}{inner}{br[2]}"))
        if len(parts) >= 2 and parts[0] != parts[1]:
            sw = list(parts)
            sw[0], sw[1] = sw[1], sw[0]
            out.append(F("near-swapped", f"{br[0]}{', '.join(sw)}{br[2]}"))
        if br[0] == "(" and br[2] == ")":
            out.append(F("near-brackets", f"[{inner}]"))
        numeric_parts = [parse_number(x) for x in parts]
        for i, pn in enumerate(numeric_parts):
            if pn and pn[0] != 0:
                sw = list(parts)
                sw[i] = render_like(-pn[0], pn[1])
                out.append(F("near-sign", f"{br[0]}{', '.join(sw)}{br[2]}"))
                break
        for i, pn in enumerate(numeric_parts):
            if pn and pn[0].denominator != 1 and fmt_dec(pn[0]):
                sw = list(parts)
                sw[i] = fmt_dec(pn[0])
                out.append(T("rewrite-fraction", f"{br[0]}{', '.join(sw)}{br[2]}"))
                break
    elif len(tops) >= 2 and ds in ("math", "math500") and not re.search(r"order", q, re.I) \
            and all(p.strip() and "=" not in p for p in tops):
        # unordered lists of solutions: 1, -2
        parts = [p.strip() for p in tops]
        sh = list(parts)
        for _ in range(10):
            rng.shuffle(sh)
            if sh != parts:
                break
        if sh != parts:
            out.append(T("rewrite-set-order", ", ".join(sh)))
        out.append(T("rewrite-solutions-x", ", ".join("x=" + p for p in parts)))
        out.append(T("rewrite-solutions-x", " \\text{ or } ".join("x = " + p for p in parts)))
        out.append(T("rewrite-set-order", "\\{" + ", ".join(sh) + "\\}"))
        out.append(F("near-missing-solution", ", ".join(parts[:-1])))
        extra = other_core(ctx["pool"], c, rng)
        if extra and "," not in extra:
            out.append(F("near-extra-solution", ", ".join(parts + [extra])))
        ctx["list_parts"] = parts
    elif c.startswith("\\{") and c.endswith("\\}") and "|" not in c and len(split_top(c[2:-2])) >= 2:
        parts = [p.strip() for p in split_top(c[2:-2])]
        sh = list(parts)
        rng.shuffle(sh)
        if sh != parts:
            out.append(T("rewrite-set-order", "\\{" + ", ".join(sh) + "\\}"))
        out.append(F("near-missing-solution", "\\{" + ", ".join(parts[:-1]) + "\\}"))

    # fractions inside expressions
    if "\\frac" in c and "\\dfrac" not in c:
        out.append(T("rewrite-dfrac", c.replace("\\frac", "\\dfrac")))
    elif "\\dfrac" in c:
        out.append(T("rewrite-dfrac", c.replace("\\dfrac", "\\frac")))

    # square roots without braces
    sq = re.sub(r"\\sqrt\{(\d+|[a-z])\}(?![A-Za-z0-9])", r"\\sqrt\1", c)
    if sq != c:
        out.append(T("rewrite-sqrt-pi", sq))
        out.append(T("rewrite-sqrt-pi", re.sub(r"\\sqrt\{(\d+|[a-z])\}(?![A-Za-z0-9])", r"\\sqrt \1", c)))
    m = re.fullmatch(r"(\d+)\s*\\sqrt\{(\d+)\}", c)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        out.append(T("rewrite-sqrt-pi", f"\\sqrt{{{a * a * b}}}"))
        out.append(F("near-sqrt", f"{a}\\sqrt{{{b + 1}}}"))
        out.append(F("near-sqrt", f"{a}\\sqrt[3]{{{b}}}"))
        out.append(F("near-sqrt", f"{a * b}"))
    m = re.fullmatch(r"\\sqrt\{(\d+)\}", c)
    if m:
        b = int(m.group(1))
        out.append(F("near-sqrt", f"\\sqrt[3]{{{b}}}"))
        out.append(F("near-sqrt", str(b)))
        out.append(T("rewrite-sqrt-pi", f"{b}^{{1/2}}"))

    # pi forms
    m = re.fullmatch(r"(\d*)\s*\\pi", c)
    if m:
        k = m.group(1)
        if k:
            out += [T("rewrite-sqrt-pi", f"{k} \\cdot \\pi"), T("rewrite-sqrt-pi", f"\\pi \\cdot {k}"),
                    T("rewrite-sqrt-pi", f"{k}π"), F("near-pi", k), F("near-pi", f"{int(k) + 1}\\pi"),
                    F("near-pi-approx", f"{int(k) * 3.14:.2f}"), T("rewrite-pi-decimal", f"{int(k) * 3.14159265:.6f}")]
        else:
            out += [T("rewrite-sqrt-pi", "π"), F("near-pi-approx", "3.14"), T("rewrite-pi-decimal", "3.1416"),
                    F("near-pi", "2\\pi")]
    m = re.fullmatch(r"\\[dt]?frac\{(\d*)\s*\\pi\}\{(\d+)\}", c)
    if m:
        k, d = m.group(1) or "1", m.group(2)
        out += [T("rewrite-sqrt-pi", f"\\frac{{{k}}}{{{d}}}\\pi"), T("rewrite-sqrt-pi", f"{'' if k == '1' else k}\\pi/{d}"),
                F("near-pi", f"\\frac{{{k}}}{{{d}}}"), F("near-reciprocal", f"\\frac{{{d}}}{{{'' if k == '1' else k}\\pi}}")]
    elif "\\pi" in c and not m:
        out.append(T("rewrite-sqrt-pi", c.replace("\\pi", "π")))

    # complex numbers with i -> j
    letters = set(re.sub(r"\\[A-Za-z]+", "", c)) & set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if letters == {"i"}:
        out.append(T("rewrite-imaginary-j", re.sub(r"(?<![A-Za-z\\])i(?![A-Za-z])", "j", c)))
        flipped = re.sub(r"([+-])(\s*[\d.]*\s*i)$", lambda mm: ("-" if mm.group(1) == "+" else "+") + mm.group(2), c)
        if flipped != c:
            out.append(F("near-conjugate", flipped))

    # trig arguments with and without parentheses
    tr = re.sub(r"\\(sin|cos|tan|cot|sec|csc)\s+([a-z]|\d+\^\\circ|\d*[a-z])(?![A-Za-z0-9])", r"\\\1(\2)", c)
    if tr != c:
        out.append(T("rewrite-trig-parens", tr))
    tr2 = re.sub(r"\\(sin|cos|tan|cot|sec|csc)\(([a-z])\)", r"\\\1 \2", c)
    if tr2 != c:
        out.append(T("rewrite-trig-parens", tr2))

    # equations y = ... written the other way round
    if c.count("=") == 1 and re.fullmatch(r"\s*[a-zA-Z]\s*", c.split("=")[0]):
        lhs, rhs = c.split("=")
        out.append(T("rewrite-equation", f"{rhs.strip()} = {lhs.strip()}"))

    # near misses on general expressions
    simple_expr = br is None and len(tops) == 1 and "=" not in c and "\\text" not in c and "\\in" not in c \
        and "matrix" not in c and "\\cup" not in c and "|" not in c
    if simple_expr:
        out.append(F("near-sign", c[1:].strip() if c.startswith("-") else "-" + c))
        if squeeze(c) != c:
            out.append(T("rewrite-spacing", squeeze(c)))
    # change one digit
    digit_spots = [mm.start() for mm in re.finditer(r"\d", c)]
    if digit_spots:
        k = rng.choice(digit_spots)
        dgt = int(c[k])
        new = str(dgt + 1 if dgt < 9 else dgt - 1)
        changed = c[:k] + new + c[k + 1:]
        if changed != c and "matrix" not in c:
            out.append(F("near-digit-change", changed))
    # single-letter variables that the toolkit's unit list strips (a, c, d, h, ...)
    # (not where the letter is a unit after a number, nor a constant of integration)
    if not re.search(r"\+\s*[cC]\s*$|\\[;,]|\d\s*[a-z](\^\{?\d\}?)?$", c):
        plain = re.sub(r"\\(text|mbox|mathrm)\{[^{}]*\}", lambda mm: "\0" * len(mm.group(0)), c)
        plain = re.sub(r"\\[A-Za-z]+", lambda mm: "\0" * len(mm.group(0)), plain)
        vars_found = sorted({mm.group(0) for mm in re.finditer(r"(?<![A-Za-z\0])[a-z](?![A-Za-z\0])", plain)})
        unit_vars = [x for x in vars_found if x in UNIT_LETTERS]
        if unit_vars:
            old = unit_vars[0]
            repl = [x for x in UNIT_LETTERS if x not in vars_found]
            if repl:
                new = rng.choice(repl)
                # one occurrence only: renaming every occurrence could be a harmless change of a
                # bound variable, as in C(h)=4h+4 -> C(t)=4t+4
                # right of an "=", if any: renaming the argument of "C(h)=" only is a typo that a
                # grader reading the right-hand side rightly ignores
                first = plain.rfind("=") + 1
                spots = [k for k in range(first, len(plain)) if plain[k] == old
                         and (k == 0 or not plain[k - 1].isalpha() and plain[k - 1] != "\0")
                         and (k + 1 == len(plain) or not plain[k + 1].isalpha() and plain[k + 1] != "\0")]
                swapped = c[:spots[0]] + new + c[spots[0] + 1:] if spots else c
                if swapped != c:
                    out.append(F("near-unit-letter", swapped))
    return out


# -------------------------------------------------------------------------------------------
# Model-style wrappers and whole-text cases

FILLER = [
    "Let's work through the problem step by step.",
    "We organise the given information and set up the relevant relationship.",
    "Simplifying carefully gives the value below.",
    "Checking the computation once more confirms it.",
    "First we restate what is being asked, then we compute.",
    "Combining the two observations above settles the question.",
]


def boxed_text(ans, rng):
    f1, f2 = rng.sample(FILLER, 2)
    style = rng.randrange(4)
    if style == 0:
        return f"{f1}\n\n{f2}\n\nTherefore, the final answer is $\\boxed{{{ans}}}$."
    if style == 1:
        return f"{f1} {f2}\n\nSo the answer is \\(\\boxed{{{ans}}}\\)."
    if style == 2:
        return f"{f1}\n\n\\[\n\\boxed{{{ans}}}\n\\]"
    return f"{f1}\n\n{f2}\n\n**Final Answer**\n\\[ \\boxed{{{ans}}} \\]"


def in_text(ans, numeric):
    return ans if numeric else f"${ans}$"


def text_cases(ctx, right, wrong, numeric):
    rng = ctx["rng"]
    R, W = right, wrong
    Rt, Wt = in_text(R, numeric), in_text(W, numeric)
    f1, f2 = rng.sample(FILLER, 2)
    out = [
        ("text-think", f"<think>\nMaybe it is \\boxed{{{W}}}. Hmm, that does not satisfy every condition; let me redo it.\n</think>\n\n{f1}\n\nThe final answer is $\\boxed{{{R}}}$.", True),
        ("text-think", f"<think>\nWorking it out I get \\boxed{{{R}}}... wait, let me recheck the last step.\n</think>\n\n{f2}\n\nTherefore the answer is $\\boxed{{{W}}}$.", False),
        ("text-think-unboxed-final", f"<think>\nFirst guess: \\boxed{{{W}}}. That is wrong; recompute.\n</think>\n\nThe answer is {Rt}.", True),
        ("text-several-boxed", f"A first attempt gives $\\boxed{{{W}}}$, which fails the check.\n\n{f1}\n\nSo the final answer is $\\boxed{{{R}}}$.", True),
        ("text-several-boxed", f"{f1} This gives $\\boxed{{{R}}}$.\n\nOn reflection I made a slip, and the correct final answer is $\\boxed{{{W}}}$.", False),
        ("text-nested-braces", f"{f1}\n\nThe answer is $\\boxed{{{{{R}}}}}$.", True),
        ("text-nested-braces", f"{f1}\n\n$$\\boxed{{\\displaystyle {R}}}$$", True),
        ("text-unclosed-box", f"{f1}\n\nThus the answer is \\boxed{{{R}", True),
        ("text-unclosed-box", f"{f1}\n\nThus the answer is \\boxed{{{W}", False),
        ("text-answer-is", f"{f1}\n\nThe answer is {Rt}.", True),
        ("text-answer-is", f"{f2}\n\nSo the final answer is {Rt}", True),
        ("text-answer-is", f"{f1}\n\nFinal Answer: The final answer is ${R}$. I hope it is correct.", True),
        ("text-answer-is", f"{f1}\n\nThe answer is {Wt}.", False),
        ("text-answer-is-trailing", f"{f1}\n\nThe answer is {Rt}. To double-check, substituting back works in all 3 cases.", True),
        ("text-final-answer-colon", f"{f2}\n\n**Final Answer:** {Rt}", True),
        ("text-boxed-trailing", f"{f1}\n\n$\\boxed{{{R}}}$\n\n(Note: this used 2 substitutions and 1 check.)", True),
        ("text-hedged", f"{f1}\n\nThe answer is either {Rt} or {Wt}.", False),
        ("text-no-answer", f"{f1} {f2} Unfortunately I could not finish the computation.", False),
        ("text-no-answer", f"{f1}\n\nThe first part gives {Wt}. Next we need to", False),
    ]
    if numeric:
        out += [
            ("text-last-number", f"{f1} Adding everything up gives {R} in total.", True),
            ("text-last-number", f"{f1}\n\n#### {R}", True),
            ("text-last-number", f"{f1} Adding everything up gives {W} in total.", False),
            ("text-trailing-number", f"{f1} The total is {R}. That took 3 steps.", True),
        ]
    parts = ctx.get("list_parts")
    if parts and len(parts) >= 2:
        out.append(("text-split-boxed", f"{f1}\n\nThe solutions are $\\boxed{{{parts[0]}}}$ and " +
                    " and ".join(f"$\\boxed{{{p}}}$" for p in parts[1:]) + ".", True))
    return [(k, t, e, True) for k, t, e in out]


def cases_for_row(ds, row, pool, rng):
    core = row["core"]
    ctx = {"ds": ds, "core": core, "question": row["question"], "rng": rng, "pool": pool}
    if ds == "gpqa_diamond" or (ds == "gaokao2023en" and re.fullmatch(r"[A-E]", core)):
        return letter_cases(ctx, core, False)
    pn = parse_number(core)
    if pn:
        v, info = pn
        out = numeric_cases(ctx, v, info)
        right = core
        if v.denominator == 1:
            wrong = str(v.numerator + rng.choice([-1, 1]) * rng.randint(1, 3))
        else:
            wrong = render_like(v + 1, info)
        numeric = v.denominator == 1 or info["decimal"]
    else:
        out = symbolic_cases(ctx)
        if out and out[0][0] == "rewrite-choice-letter":
            return out
        right = core
        wrong = other_core(pool, core, rng) or (core + "+1")
        numeric = False
    out += text_cases(ctx, right, wrong, numeric)
    return out


# --------------------------------------------------------------------------------------------
# The toolkit, run in a worker process so that each call's time can be bounded


def is_multi_choice(answer):
    """math_eval's test: every character a choice letter (so the empty string too)."""
    return set(answer) <= set("ABCDE")


def _pipeline_extract(tk, ds, raw, prediction):
    """Ground truth and prediction as math_eval.main + evaluate.evaluate compute them."""
    parse_ground_truth = tk["parse_ground_truth"]
    if ds in TOOLKIT_GT_NAMES:
        gt_cot, gt = parse_ground_truth(raw, ds)
    else:
        gt_cot, gt = parse_ground_truth({"answer": raw["answer"]}, GENERIC_GT_NAME)
    # evaluate() parses the ground truth again from the saved sample's gt_cot / gt
    _, gt = parse_ground_truth({"gt_cot": gt_cot, "gt": gt}, ds)
    code = prediction.strip()
    for w in STOP_WORDS:
        if w in code:
            code = code.split(w)[0].strip()
    pred, _ = tk["run_execute"](None, code, "qwen25-math-cot", ds)
    if gt in ["A", "B", "C", "D", "E"] and pred not in ["A", "B", "C", "D", "E"]:
        pred = tk["choice_answer_clean"](code)
    elif is_multi_choice(gt) and not is_multi_choice(pred):
        pred = "".join([c for c in pred if c in ["A", "B", "C", "D", "E"]])
    return pred, gt


def _worker(conn, tk):
    while True:
        msg = conn.recv()
        if msg is None:
            return
        stage, payload = msg
        try:
            if stage == "extract":
                res = ("ok", _pipeline_extract(tk, *payload))
            else:
                pred, gt = payload
                res = ("ok", bool(tk["math_equal_process"]((0, pred, gt))))
        except Exception as e:  # evaluate.py would stop on an exception; record it
            res = ("error", f"{type(e).__name__}: {e}")
        conn.send(res)


class Toolkit:
    def __init__(self, toolkit_dir):
        sys.path.insert(0, str(toolkit_dir))
        import parser as tk_parser  # noqa: the toolkit's parser.py
        import grader as tk_grader
        self.tk = {
            "parse_ground_truth": tk_parser.parse_ground_truth,
            "run_execute": tk_parser.run_execute,
            "choice_answer_clean": tk_parser.choice_answer_clean,
            "math_equal_process": tk_grader.math_equal_process,
        }
        self.mp = multiprocessing.get_context("fork")
        self.proc = None
        self.restarts = 0

    def _start(self):
        parent, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=_worker, args=(child, self.tk), daemon=True)
        self.proc.start()
        self.conn = parent

    def _call(self, stage, payload, timeout):
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((stage, payload))
        if self.conn.poll(timeout):
            return self.conn.recv()
        self.proc.terminate()
        self.proc.join()
        self.proc = None
        self.restarts += 1
        return ("timeout", None)

    def verdict(self, ds, raw, prediction, equal_timeout):
        st, val = self._call("extract", (ds, raw, prediction), EXTRACT_TIMEOUT_S)
        if st != "ok":
            return {"toolkit_extracted": "", "toolkit_gt": None, "toolkit_correct": False,
                    "toolkit_timeout": st == "timeout", "toolkit_error": val or st}
        pred, gt = val
        st, ok = self._call("equal", (pred, gt), equal_timeout)
        res = {"toolkit_extracted": "" if pred is None else str(pred), "toolkit_gt": gt,
               "toolkit_correct": bool(ok) if st == "ok" else False, "toolkit_timeout": st == "timeout"}
        if st == "error":
            res["toolkit_error"] = ok
        return res

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(5)


# --------------------------------------------------------------------------------------------


# Where the toolkit's verdict is not the expected one: the class of the toolkit's error, and
# whether kvbench departs from the toolkit there (True: it gives the expected verdict) or shares
# the limitation (False: rule-based extraction cannot read the intent; it gives the toolkit's).
DISAGREEMENTS = {
    "near-times-100": ("percent-tolerance", True),
    "near-div-100": ("percent-tolerance", True),
    "near-mixed-number": ("mixed-number-as-product", True),
    "rewrite-mixed-number": ("mixed-number-as-product", True),
    "near-brackets": ("bracket-type-ignored", True),
    "rewrite-set-order": ("list-order", True),
    "near-extra-solution": ("list-read-as-first-element", True),
    "near-missing-solution": ("list-read-as-first-element", True),
    "rewrite-solutions-x": ("or-between-solutions", True),
    "near-unit-letter": ("unit-stripping-deletes-letters", True),
    "near-unit-word": ("unit-stripping-deletes-letters", True),
    "near-other-text": ("unit-stripping-deletes-letters", True),
    "rewrite-units": ("unit-word-kept", True),
    "rewrite-spacing": ("unit-word-kept", True),
    "rewrite-degrees": ("degree-sign", True),
    "text-think-unboxed-final": ("think-block", True),
    "text-answer-is-trailing": ("answer-is-runs-on", True),
    "rewrite-matrix-tuple": ("matrix-as-tuple", True),
    "text-hedged": ("hedged-answer", True),
    "rewrite-words": ("number-words-in-text", True),
    "rewrite-text-wrapper": ("text-wrapper", True),
    "rewrite-pi-decimal": ("pi-read-as-symbol", True),
    "rewrite-equation": ("equation-right-to-left", True),
    "rewrite-choice-letter": ("choice-letter-forms", True),
    "text-trailing-number": ("last-number-rule", False),
    "text-split-boxed": ("last-box-rule", False),
    "text-final-answer-colon": ("final-answer-colon", False),
}
INTEGER = re.compile(r"-?\d+")


def disagreement(rec):
    """(class, kvbench_corrects) for a case where the toolkit's verdict is not the expected one."""
    kind, pred, tk_pred, gt = rec["kind"], rec["prediction"], rec["toolkit_extracted"], rec["toolkit_gt"]
    numbers = [INTEGER.fullmatch(x.replace(",", "")) is not None for x in (tk_pred, gt)]
    if kind in ("near-times-100", "near-div-100"):
        return DISAGREEMENTS[kind]
    if rec["toolkit_correct"] and parse_number(tk_pred.replace(",", "")) and parse_number(gt.replace(",", "")):
        if any(numbers):
            return "tolerance-accepts-other-integer", True
        return "tolerance-accepts-near-decimal", False
    if kind == "text-nested-braces" and "\\displaystyle" in pred:
        return "displaystyle-kept", True
    if kind == "rewrite-interval":
        return ("unicode-symbol", True) if "∞" in pred else ("set-builder-notation", False)
    if kind == "rewrite-sqrt-pi" and "π" in pred:
        return "unicode-symbol", True

    if kind == "rewrite-thousands" and "{,}" in pred:
        return "thousands-in-braces", True
    if kind == "text-last-number" and "\\!" in pred:
        return "spacing-in-number", False
    if kind in ("text-choice-article", "text-answer-is") and rec["dataset"] != "gpqa_diamond":
        # math_eval.py re-reads the completion for a letter only when the reference is "C", not "(C)"
        return ("article-read-as-choice", True) if tk_pred == "A" else ("choice-in-prose", True)
    if kind == "text-choice-article":
        return "article-read-as-choice", True
    if kind in DISAGREEMENTS:
        return DISAGREEMENTS[kind]
    # near misses of other kinds that the toolkit accepts
    if rec["toolkit_correct"] and "\\cup" in gt:
        return "union-split-at-commas", True
    if rec["toolkit_correct"] and "," in gt and tk_pred.split(",")[0] == gt.split(",")[0]:
        return "list-read-as-first-element", True
    if rec["toolkit_correct"] and "_" in gt:
        return "subscript-ignored", True
    return "unclassified", None


def select(cands, target, rng):
    """Round-robin over kinds, alternating should-be-correct and should-be-wrong."""
    by = {True: {}, False: {}}
    seen = set()
    for c in cands:
        key = (c["row"], c["prediction"])
        if key in seen:
            continue
        seen.add(key)
        by[c["expected"]].setdefault(c["kind"], []).append(c)
    for side in by.values():
        for lst in side.values():
            rng.shuffle(lst)
    order = {s: sorted(by[s]) for s in by}
    pos = {True: 0, False: 0}
    picked = []
    side = True
    while len(picked) < target and any(by[s][k] for s in by for k in by[s]):
        kinds = [k for k in order[side] if by[side][k]]
        if not kinds:
            side = not side
            continue
        k = kinds[pos[side] % len(kinds)]
        pos[side] += 1
        picked.append(by[side][k].pop())
        side = not side
    return picked


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toolkit", default="/work/scratch/qwen-math-eval",
                    help="directory holding the Qwen2.5-Math evaluation/ files")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--out", default=str(REPO / "tests" / "data" / "grading-cases.jsonl"))
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--equal-timeout", type=float, default=EQUAL_TIMEOUT_S,
                    help="seconds per math_equal call (evaluate.py uses 3)")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the per-dataset targets")
    args = ap.parse_args()

    t0 = time.time()
    tk = Toolkit(args.toolkit)
    records = []
    for ds in args.datasets.split(","):
        rng = random.Random(f"{args.seed}-{ds}")
        rows = load_rows(args.data_dir, ds)
        pool = [r["core"] for r in rows]
        idx = list(range(len(rows)))
        rng.shuffle(idx)
        keep = ROW_SAMPLE.get(ds, len(idx))
        # always include the rows whose answers have rarer forms, so that their kinds are covered
        rare = [i for i in idx[keep:] if RARE_FORMS.search(rows[i]["core"])]
        idx = idx[:keep] + rare
        cands = []
        for i in idx:
            row = rows[i]
            for kind, text, expected, is_text in cases_for_row(ds, row, pool, rng):
                pred = text if is_text else boxed_text(text, rng)
                cands.append({"row": row["row"], "reference": row["reference"], "raw": row["raw"],
                              "kind": kind, "prediction": pred, "expected": expected})
        picked = select(cands, int(TARGETS[ds] * args.scale), rng)
        for n, c in enumerate(picked, 1):
            v = tk.verdict(ds, c["raw"], c["prediction"], args.equal_timeout)
            rec = {"id": f"{ds}-{n}", "dataset": ds, "row": c["row"], "kind": c["kind"],
                   "reference": c["reference"], "prediction": c["prediction"]}
            rec.update(v)
            rec["expected"] = c["expected"]
            rec["toolkit_error"], rec["kvbench_corrects"] = (None, None) if v["toolkit_correct"] == c["expected"] \
                else disagreement(rec)
            records.append(rec)
        print(f"{ds}: {len(picked)} cases from {len(cands)} candidates ({time.time() - t0:.0f}s)", file=sys.stderr)
    tk.close()

    unclassified = [r["id"] for r in records if r["toolkit_error"] == "unclassified"]
    if unclassified:
        sys.exit(f"unclassified toolkit disagreements (nothing written): {' '.join(unclassified)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out)
    agree = sum(r["toolkit_correct"] == r["expected"] for r in records)
    print(f"wrote {len(records)} cases to {out}; toolkit agrees with expected on {agree}; "
          f"{sum(r['toolkit_timeout'] for r in records)} timeouts; {time.time() - t0:.0f}s", file=sys.stderr)
    classes = {}
    for r in records:
        if r["toolkit_error"]:
            key = (r["toolkit_error"], r["kvbench_corrects"])
            classes[key] = classes.get(key, 0) + 1
    for (cls, corrects), n in sorted(classes.items(), key=lambda kv: -kv[1]):
        side = {True: "kvbench corrects", False: "kvbench follows", None: "UNCLASSIFIED"}[corrects]
        print(f"  toolkit error {cls}: {n} ({side})", file=sys.stderr)


if __name__ == "__main__":
    main()
