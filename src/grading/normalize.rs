//! Answer normalisation: the Qwen2.5-Math toolkit's `parser.py` `strip_string`, re-done on std.
//!
//! In order: unicode look-alikes → LaTeX (U+2212 minus, ×, ·, π, √, ∞, °, …); spacing commands
//! (`\!`, `\,`, `\;`, `\:`, `\ `, `\quad`), `\left`/`\right`, `$`, `\(`…`\)`, `\dfrac`/`\tfrac`,
//! `^\circ`/`^{\circ}`, `\%`/`%` (dropped, but remembered: see [`Normalized::percent`]); a trailing
//! `\text{ unit}` (letters only, at least two); `\text{}`, `\textbf{}`, `\mathrm{}`, `\mbox{}`,
//! `\boxed{}` unwrapped; matrices spelled `pmatrix`; trailing unit words ("cm", "dollars",
//! "degrees", …, optionally `^2`/`^3`; "percent" sets the percent flag); " and " / " or " between
//! answers → ", " (so "$5$ or $9$" is the list "5,9"); thousands separators
//! ("5,000" and `5{,}000` → "5000", only in groups of three, outside brackets, not followed by a
//! space, so "1,2", "(1,100)" and "48, 384" stay lists); whitespace (kept once between a command
//! name and a letter: `\pi r`); infinity spellings; a single-variable side of an equation ("x=5" →
//! "5", "y = 2x+3" → "2x+3", "f(x)=2x" → "2x", and right to left "5 = x" → "5"; `x\in[1,2]` →
//! "[1,2]"); "27.0" → "27", ".5" → "0.5"; `\frac12` → `\frac{1}{2}`, `\frac1b`, `\sqrt2` →
//! `\sqrt{2}` (one token, as LaTeX reads it); `x^{2}` → `x^2`; "3/4" → `\frac{3}{4}`; outer
//! braces without a top-level comma; a trailing period. Also, as the toolkit does: a whole answer
//! in number words ("seventeen", "two hundred") → its digits; "inf" → `\infty`; `j` as the
//! imaginary unit ("3+4j") → `i`.
//!
//! Differences from the toolkit: its unit list removes lone letters ("a", "m", "s", …) and
//! "and" anywhere; here units are words of two or more letters after a number, and a spaced
//! "and"/"or" separates list items.

use super::braces::{control_word_end, fix_args, simplify_scripts, slash_to_frac, strip_outer_braces};
use super::spellings::{function_parens, imaginary_j, number_words, replace_word};

pub(super) struct Normalized {
    pub(super) text: String,
    /// The answer carried a percent sign (or the word "percent"): "10%" may mean 10 or 0.1.
    pub(super) percent: bool,
}

pub(super) fn normalize(s: &str) -> String {
    normalize_full(s).text
}

pub(super) fn normalize_full(input: &str) -> Normalized {
    let mut percent = false;
    let s = map_unicode(input);
    let s = escapes(&s, &mut percent).replace("{,}", ",");
    let s = strip_trailing_text_unit(s.trim());
    let s = unwrap_text(&s);
    let s = matrices(&s);
    let s = strip_unit_words(s.trim(), &mut percent);
    let s = number_words(&s).unwrap_or(s);
    let s = s.replace(" and ", ", ").replace(" or ", ", ");
    let s = trim_edges(&s);
    let s = join_thousands(&s);
    let s = remove_spaces(&s);
    let s = fix_infinity(&s);
    let s = imaginary_j(&s);
    let s = function_parens(&s);
    // `{x=5}` as well as `x=5`
    let s = strip_variable_prefix(&strip_outer_braces(&s));
    let s = fix_decimals(&s);
    let s = fix_args(&s, 0);
    let s = simplify_scripts(&s);
    let s = slash_to_frac(&s);
    let s = strip_outer_braces(&s);
    let s = trim_edges(&s);
    Normalized { text: s, percent }
}

fn map_unicode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2212}' | '\u{FF0D}' | '\u{FE63}' => out.push('-'),
            '×' => out.push_str("\\times "),
            '·' | '⋅' => out.push_str("\\cdot "),
            '÷' => out.push_str("\\div "),
            'π' => out.push_str("\\pi "),
            '∞' => out.push_str("\\infty "),
            '√' => out.push_str("\\sqrt "),
            '≤' => out.push_str("\\le "),
            '≥' => out.push_str("\\ge "),
            '≠' => out.push_str("\\ne "),
            '±' => out.push_str("\\pm "),
            '∓' => out.push_str("\\mp "),
            '∪' => out.push_str("\\cup "),
            '∩' => out.push_str("\\cap "),
            '∈' => out.push_str("\\in "),
            '°' | '\u{200B}' | '\u{FEFF}' => {}
            '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{3000}' => out.push(' '),
            '，' => out.push(','),
            '（' => out.push('('),
            '）' => out.push(')'),
            '：' => out.push(':'),
            '\u{FF10}'..='\u{FF19}' => out.push(char::from(b'0' + (c as u32 - 0xFF10) as u8)),
            _ => out.push(c),
        }
    }
    out
}

/// Backslash escapes and spacing, one pass (so the `\\` row separator is never half-consumed).
fn escapes(s: &str, percent: &mut bool) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            '\\' => {
                let Some(&n) = cs.get(i + 1) else {
                    out.push('\\');
                    i += 1;
                    continue;
                };
                if n.is_ascii_alphabetic() {
                    let j = control_word_end(&cs, i);
                    let name: String = cs[i + 1..j].iter().collect();
                    i = j;
                    match name.as_str() {
                        "left" | "right" | "big" | "Big" | "bigl" | "bigr" | "Bigl" | "Bigr" => {
                            if cs.get(i) == Some(&'.') {
                                i += 1; // `\left.` / `\right.`
                            }
                        }
                        "quad" | "qquad" => out.push(' '),
                        "dfrac" | "tfrac" => out.push_str("\\frac"),
                        "displaystyle" | "textstyle" | "degree" => {}
                        "neq" => out.push_str("\\ne"),
                        "leq" | "leqslant" => out.push_str("\\le"),
                        "geq" | "geqslant" => out.push_str("\\ge"),
                        "emptyset" | "varnothing" => out.push_str("{}"),
                        "lbrace" => out.push('{'),
                        "rbrace" => out.push('}'),
                        "circ" => {
                            let kept = out.trim_end().len();
                            out.truncate(kept);
                            if out.ends_with('^') {
                                out.pop(); // `^\circ`
                            } else if out.ends_with("^{") && cs.get(i) == Some(&'}') {
                                out.truncate(out.len() - 2); // `^{\circ}`
                                i += 1;
                            } else {
                                out.push_str("\\circ");
                            }
                        }
                        _ => {
                            out.push('\\');
                            out.push_str(&name);
                        }
                    }
                } else {
                    i += 2;
                    match n {
                        '\\' => out.push_str("\\\\"),
                        '!' => {
                            while i < cs.len() && cs[i].is_whitespace() {
                                i += 1;
                            }
                        }
                        ',' | ';' | ':' | '>' | ' ' => out.push(' '),
                        '(' | ')' | '[' | ']' | '$' => {}
                        '%' => *percent = true,
                        '{' => out.push('{'),
                        '}' => out.push('}'),
                        _ => {
                            out.push('\\');
                            out.push(n);
                        }
                    }
                }
            }
            '$' => i += 1,
            '%' => {
                *percent = true;
                i += 1;
            }
            '\n' | '\r' | '\t' => {
                out.push(' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

const TEXT_COMMANDS: &[&str] = &["text", "mbox", "textrm", "mathrm", "textnormal", "textit", "textbf", "hbox"];

/// Splits a trailing `^2`, `^3`, `^{2}`, `^{3}` off.
fn strip_power_suffix(s: &str) -> &str {
    for suffix in ["^{2}", "^{3}", "^2", "^3"] {
        if let Some(body) = s.strip_suffix(suffix) {
            return body.trim_end();
        }
    }
    s
}

/// "5 \text{ cm}^2" → "5": a trailing text command holding only words (two or more letters),
/// when something precedes it (toolkit: `re.sub(r"\\text{.*?}$", "", string)`).
fn strip_trailing_text_unit(s: &str) -> String {
    let mut s = s.to_string();
    for _ in 0..3 {
        let body = strip_power_suffix(s.trim_end());
        if !body.ends_with('}') {
            break;
        }
        let bytes = body.as_bytes();
        let mut depth = 0usize;
        let mut open = None;
        for k in (0..bytes.len()).rev() {
            match bytes[k] {
                b'}' => depth += 1,
                b'{' => {
                    depth -= 1;
                    if depth == 0 {
                        open = Some(k);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(open) = open else { break };
        let before = body[..open].trim_end();
        let Some(cmd) = TEXT_COMMANDS.iter().find(|c| before.ends_with(&format!("\\{c}"))) else { break };
        let content = &body[open + 1..body.len() - 1];
        let letters = content.chars().filter(|c| c.is_alphabetic()).count();
        if letters < 2 || !content.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '.') {
            break;
        }
        let remainder = before[..before.len() - cmd.len() - 1].trim_end();
        let value_like = remainder.chars().last().is_some_and(|c| c.is_alphanumeric() || matches!(c, '}' | ')' | ']'));
        if !value_like {
            break;
        }
        s = remainder.to_string();
    }
    s
}

const UNWRAP: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textnormal",
    "textsf",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mbox",
    "hbox",
    "boxed",
    "fbox",
    "operatorname",
];

/// `\text{…}` → `…` for the commands in [`UNWRAP`], nested or not, in one pass.
fn unwrap_text(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut drop_close: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '\\' => {
                let j = control_word_end(&cs, i);
                if j == i + 1 {
                    out.push('\\');
                    if let Some(&n) = cs.get(j) {
                        out.push(n);
                    }
                    i = j + 1;
                    continue;
                }
                let name: String = cs[i + 1..j].iter().collect();
                let mut k = j;
                while k < cs.len() && cs[k] == ' ' {
                    k += 1;
                }
                if UNWRAP.contains(&name.as_str()) && cs.get(k) == Some(&'{') {
                    drop_close.push(true);
                    i = k + 1;
                } else {
                    out.push('\\');
                    out.push_str(&name);
                    i = j;
                }
            }
            '{' => {
                drop_close.push(false);
                out.push('{');
                i += 1;
            }
            '}' => {
                if drop_close.pop() != Some(true) {
                    out.push('}');
                }
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `bmatrix`, `matrix`, `array` → `pmatrix` (toolkit: `\begin{array}{…}` → `\begin{pmatrix}`).
fn matrices(s: &str) -> String {
    let s = s.replace("bmatrix", "pmatrix").replace("{matrix}", "{pmatrix}").replace("\\end{array}", "\\end{pmatrix}");
    let mut pieces = s.split("\\begin{array}");
    let mut out = pieces.next().unwrap_or("").to_string();
    for piece in pieces {
        out.push_str("\\begin{pmatrix}");
        let column_spec = piece.strip_prefix('{').and_then(|p| p.find('}').map(|close| &p[close + 1..]));
        out.push_str(column_spec.unwrap_or(piece));
    }
    out
}

#[rustfmt::skip]
const UNITS: &[&str] = &[
    "dollars", "dollar", "cents", "cent", "cm", "mm", "km", "meters", "meter", "metres", "metre", "inches", "inch",
    "feet", "foot", "ft", "yards", "yard", "yd", "miles", "mile", "mph", "kmh", "units", "unit", "degrees",
    "degree", "deg", "radians", "radian", "hours", "hour", "hrs", "hr", "minutes", "minute", "mins", "min",
    "seconds", "second", "secs", "sec", "days", "day", "weeks", "week", "months", "month", "years", "year", "yrs",
    "kg", "grams", "gram", "pounds", "pound", "lbs", "lb", "ounces", "ounce", "oz", "liters", "liter", "litres",
    "litre", "ml", "gallons", "gallon", "square", "sq", "cubic", "per", "ways", "people", "students", "points",
    "times", "centimeters", "centimeter", "centimetres", "centimetre", "millimeters", "millimeter", "kilometers",
    "kilometer",
];

/// Trailing unit words after a value ("18 dollars", "15 cm^2", "20 percent", "5cm").
fn strip_unit_words(s: &str, percent: &mut bool) -> String {
    let mut s = s;
    for _ in 0..4 {
        let t = s.trim_end().trim_end_matches('.').trim_end();
        let body = strip_power_suffix(t);
        let run = body.bytes().rev().take_while(|b| b.is_ascii_alphabetic()).count();
        if run < 2 {
            break;
        }
        let start = body.len() - run;
        let before = body[..start].chars().last();
        if !before.is_some_and(|c| c.is_whitespace() || c.is_ascii_digit() || matches!(c, '}' | ')')) {
            break;
        }
        let word = body[start..].to_ascii_lowercase();
        let remainder = body[..start].trim_end();
        if remainder.is_empty() {
            break;
        }
        if word == "percent" {
            *percent = true;
        } else if !UNITS.contains(&word.as_str()) {
            break;
        }
        s = remainder;
    }
    s.to_string()
}

/// Trims whitespace, trailing periods and a leading colon.
fn trim_edges(s: &str) -> String {
    let t = s.trim().trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let t = t.strip_prefix(':').unwrap_or(t).trim();
    t.to_string()
}

/// "5,000" → "5000" and "11,111,111" → "11111111": digit groups of three after a first group of
/// one to three digits (no leading zero), outside brackets, not part of a longer comma list.
fn join_thousands(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let digit = |k: usize| cs.get(k).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::with_capacity(s.len());
    let mut depth = 0i64;
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = (depth - 1).max(0),
            _ => {}
        }
        let prev = if i == 0 { None } else { Some(cs[i - 1]) };
        let starts = c.is_ascii_digit() && !prev.is_some_and(|p| p.is_ascii_digit() || p == '.' || p == ',');
        if !starts {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i;
        while digit(j) {
            j += 1;
        }
        let mut k = j;
        if depth == 0 && j - i <= 3 && c != '0' {
            while cs.get(k) == Some(&',') && digit(k + 1) && digit(k + 2) && digit(k + 3) && !digit(k + 4) {
                k += 4;
            }
            let list_continues = cs.get(k) == Some(&',') && digit(k + 1);
            if k > j && !list_continues {
                out.extend(cs[i..k].iter().filter(|c| **c != ','));
                i = k;
                continue;
            }
        }
        out.extend(&cs[i..j]);
        i = j;
    }
    out
}

/// Removes whitespace, keeping one space between a command name and a following letter (`\pi r`).
fn remove_spaces(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    // 0: plain, 1: after an unpaired backslash, 2: inside a command name
    let mut state = 0u8;
    for (i, &c) in cs.iter().enumerate() {
        if c.is_whitespace() {
            if state == 2 {
                let next = cs[i..].iter().find(|c| !c.is_whitespace());
                if next.is_some_and(|n| n.is_ascii_alphabetic()) {
                    out.push(' ');
                }
            }
            state = 0;
            continue;
        }
        state = match c {
            '\\' => {
                if state == 1 {
                    0
                } else {
                    1
                }
            }
            c if c.is_ascii_alphabetic() && state != 0 => 2,
            _ => 0,
        };
        out.push(c);
    }
    out
}

fn fix_infinity(s: &str) -> String {
    // "inf" alone (Python's spelling); not inside "infinity" or `\infty`.
    let s = replace_word(s, "inf", "\\infty");
    let mut s = s.replace("infinity", "\\infty").replace("\\\\infty", "\\infty");
    for lead in [",", "(", "["] {
        s = s.replace(&format!("{lead}+\\infty"), &format!("{lead}\\infty"));
    }
    if let Some(rest) = s.strip_prefix("+\\infty") {
        s = format!("\\infty{rest}");
    }
    if s == "(-\\infty,\\infty)" {
        s = "\\mathbb{R}".to_string();
    }
    s
}

/// "x=5" → "5", "k=\frac12" → "\frac12", "f(x)=2x" → "2x", `\theta=…` → "…", `x\in[1,2]` → "[1,2]".
fn strip_variable_prefix(s: &str) -> String {
    let mut chars = s.chars();
    if chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        if let Some(rest) = chars.as_str().strip_prefix("\\in") {
            if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) && !rest.is_empty() {
                return rest.to_string();
            }
        }
    }
    // "x=1, x=-2" → "1,-2": one variable's solutions, listed.
    let items = split_top_commas(s);
    if items.len() > 1 {
        let sides: Vec<(&str, &str)> = items.iter().filter_map(|i| i.split_once('=')).collect();
        let var = sides.first().map(|(l, _)| *l);
        if sides.len() == items.len()
            && var.is_some_and(is_single_variable)
            && sides.iter().all(|(l, r)| Some(*l) == var && !r.is_empty() && !r.contains('='))
        {
            return sides.iter().map(|(_, r)| *r).collect::<Vec<_>>().join(",");
        }
    }
    if s.matches('=').count() == 1 {
        if let Some((lhs, rhs)) = s.split_once('=') {
            if !rhs.is_empty() && is_single_variable(lhs) {
                return rhs.to_string();
            }
            // written right to left: "2x+3=y", "5=x"
            if !lhs.is_empty() && is_single_variable(rhs) && !lhs.ends_with(['<', '>', '!']) {
                return lhs.to_string();
            }
        }
    }
    s.to_string()
}

/// `s` split at the commas outside brackets and braces.
fn split_top_commas(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items
}

fn is_single_variable(lhs: &str) -> bool {
    if let Some(name) = lhs.strip_prefix('\\') {
        return (2..=10).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphabetic());
    }
    let cs: Vec<char> = lhs.chars().collect();
    match cs.as_slice() {
        [a] => a.is_ascii_alphabetic(),
        [a, b] => a.is_ascii_alphabetic() && (b.is_ascii_alphanumeric() || *b == '\''),
        [a, '_', b] => a.is_ascii_alphabetic() && b.is_ascii_alphanumeric(),
        [f, '(', x, ')'] => f.is_ascii_alphabetic() && x.is_ascii_alphabetic(),
        _ => false,
    }
}

/// ".5" → "0.5"; "27.0" → "27", "2.00x" → "2x" (toolkit: `(\d+)\.0*([^\d])` → `\1\2`).
fn fix_decimals(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let digit = |k: usize| cs.get(k).is_some_and(|c| c.is_ascii_digit());
    let mut out = String::with_capacity(s.len() + 2);
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '.' && i > 0 && digit(i - 1) {
            let mut j = i + 1;
            while cs.get(j) == Some(&'0') {
                j += 1;
            }
            if !digit(j) {
                i = j;
                continue;
            }
        } else if c == '.' && digit(i + 1) && !(i > 0 && digit(i - 1)) {
            out.push('0');
        }
        out.push(c);
        i += 1;
    }
    out
}
