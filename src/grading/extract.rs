//! Answer extraction: completion text → the final answer as written.
//!
//! Follows the Qwen2.5-Math evaluation toolkit's `parser.py` `extract_answer` (last `boxed` with
//! brace matching, else "he answer is", else "final answer is", else the last number) and
//! `choice_answer_clean` (multiple choice letters), with these additions:
//! - Only the text after the last `</think>` is read when thinking was closed, so a `\boxed{}`
//!   drafted inside the reasoning never counts; a truncated trace without `</think>` is read whole.
//! - `\fbox{}` counts as `\boxed{}`; empty boxes are skipped (the previous box, then the phrases,
//!   then the last number are tried); an unclosed last box takes the rest of the text, as the
//!   toolkit does (`\boxed{12` at the end of a truncated trace → "12").
//! - "the answer is" takes the math segment that follows (`$…$`, `\(…\)`), else the rest of that
//!   sentence (to the line end or a period followed by a space outside `$…$`), not the rest of the
//!   completion; for `Numeric` the first number in it.
//! - The last number knows negative signs (ASCII and U+2212), decimals, thousands separators in
//!   groups of three ("5,000") and fractions ("3/4"); a comma not grouping three digits separates
//!   numbers ("1,2" → "2").
//! - Multiple choice: the letter in the last box, else the letter after the last "answer is" /
//!   "choice is" / "option is" / "answer:", else the last standalone capital A–E (a sentence-initial
//!   article "A word" is not a choice), or a lowercase letter in parentheses "(c)"; "Option C" and
//!   "choice C" read as C. (A math answer against a letter reference falls back to these rules in
//!   `grade_completion`, as the toolkit's `math_eval.py` does.)

use super::normalize::normalize;
use super::{AnswerKind, Extracted};

const THINK_END: &str = "</think>";

pub(super) fn extract_answer(completion: &str, kind: AnswerKind) -> Extracted {
    let (text, think_closed) = match completion.rfind(THINK_END) {
        Some(at) => (&completion[at + THINK_END.len()..], true),
        None => (completion, false),
    };
    let found = match kind {
        AnswerKind::MultipleChoice => extract_choice(text),
        AnswerKind::Numeric | AnswerKind::Math => extract_math(text, kind),
    };
    match found {
        Some((answer, method)) => Extracted { answer: Some(answer), think_closed, method },
        None => Extracted { answer: None, think_closed, method: "none" },
    }
}

fn extract_math(text: &str, kind: AnswerKind) -> Option<(String, &'static str)> {
    if let Some(content) = last_boxed(text) {
        return Some((content.trim().to_string(), "boxed"));
    }
    for phrase in ["the answer is", "final answer is"] {
        if let Some(rest) = after_phrase(text, phrase) {
            // "The answer is 18 dollars" is 18; "the answer is either 50 or 53" is not one number.
            let answer = match kind {
                AnswerKind::Numeric if count_numbers(&rest) == 1 => {
                    first_number(&rest).map(str::to_string).unwrap_or(rest)
                }
                _ => rest,
            };
            if !answer.is_empty() {
                return Some((answer, phrase));
            }
        }
    }
    last_number(text).map(|n| (n.to_string(), "last number"))
}

/// Content of the last non-empty `\boxed{…}` / `\fbox{…}` / `\boxed token`, braces matched.
pub(super) fn last_boxed(text: &str) -> Option<String> {
    let mut ends: Vec<usize> = text.match_indices("\\boxed").map(|(i, m)| i + m.len()).collect();
    ends.extend(text.match_indices("\\fbox").map(|(i, m)| i + m.len()));
    ends.sort_unstable();
    ends.iter().rev().filter_map(|&end| boxed_content(&text[end..])).find(|c| !c.trim().is_empty())
}

/// `rest` starts right after the command name.
fn boxed_content(rest: &str) -> Option<String> {
    let first = rest.chars().next()?;
    if first.is_ascii_alphabetic() {
        return None; // another command, e.g. `\boxedfoo`
    }
    let trimmed = rest.trim_start();
    if let Some(body) = trimmed.strip_prefix('{') {
        let mut depth = 1usize;
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next(); // `\{`, `\}`, `\\` are not structure
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(body[..i].to_string());
                    }
                }
                _ => {}
            }
        }
        Some(body.to_string()) // unclosed: the rest, as the toolkit does
    } else if first.is_whitespace() {
        Some(trimmed.chars().take_while(|c| !c.is_whitespace() && *c != '$').collect())
    } else {
        None
    }
}

/// The rest of the sentence after the last (ASCII case-insensitive) `phrase`.
fn after_phrase(text: &str, phrase: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let at = lower.rfind(phrase)?;
    let rest = text[at + phrase.len()..].trim_start_matches(|c: char| c.is_whitespace() || c == ':' || c == '*');
    if let Some(math) = leading_math(rest) {
        return Some(math.to_string());
    }
    let line = rest.split('\n').next().unwrap_or("");
    let sentence = cut_sentence(line);
    let answer = sentence.trim().trim_end_matches(|c: char| c == '.' || c == '*' || c.is_whitespace());
    Some(answer.to_string())
}

/// A math segment opening `rest` (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`), delimiters included.
fn leading_math(rest: &str) -> Option<&str> {
    let (open, close) = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
        .into_iter()
        .find(|(open, _)| rest.starts_with(open))?;
    let end = rest[open.len()..].find(close)?;
    Some(&rest[..open.len() + end + close.len()])
}

/// Cuts at the first period followed by whitespace (or ending the line) outside `$…$`.
fn cut_sentence(line: &str) -> &str {
    let paired = line.matches('$').count().is_multiple_of(2); // an odd `$` is a currency sign
    let mut in_math = false;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '$' if paired => in_math = !in_math,
            '.' if !in_math => match chars.peek() {
                None => return &line[..i],
                Some((_, n)) if n.is_whitespace() => return &line[..i],
                _ => {}
            },
            _ => {}
        }
    }
    line
}

fn count_numbers(text: &str) -> usize {
    let mut n = 0;
    scan_numbers(text, |_| {
        n += 1;
        true
    });
    n
}

fn first_number(text: &str) -> Option<&str> {
    let mut found = None;
    scan_numbers(text, |span| {
        found = Some(span);
        false
    });
    found
}

fn last_number(text: &str) -> Option<&str> {
    let mut found = None;
    scan_numbers(text, |span| {
        found = Some(span);
        true
    });
    found
}

/// Calls `f` with each number in `text`, left to right, while it returns true.
fn scan_numbers<'a>(text: &'a str, mut f: impl FnMut(&'a str) -> bool) {
    let cs: Vec<(usize, char)> = text.char_indices().collect();
    let at = |k: usize| cs.get(k).map(|&(_, c)| c);
    let digit = |k: usize| at(k).is_some_and(|c| c.is_ascii_digit());
    let offset = |k: usize| cs.get(k).map_or(text.len(), |&(b, _)| b);
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i].1;
        let prev = if i == 0 { None } else { at(i - 1) };
        let prev_digit = prev.is_some_and(|p| p.is_ascii_digit());
        let starts_digits = |k: usize| digit(k) || (at(k) == Some('.') && digit(k + 1));
        let signed = (c == '-' || c == '\u{2212}')
            && starts_digits(i + 1)
            && !prev.is_some_and(|p| p.is_alphanumeric() || matches!(p, ')' | '}' | ']'));
        let unsigned = !prev_digit && (c.is_ascii_digit() || (c == '.' && digit(i + 1)));
        if !(signed || unsigned) {
            i += 1;
            continue;
        }
        let mut j = if signed { i + 1 } else { i };
        let run_start = j;
        while digit(j) {
            j += 1;
        }
        if j > run_start && j - run_start <= 3 {
            // thousands separators: ",ddd" groups not followed by another digit
            while at(j) == Some(',') && digit(j + 1) && digit(j + 2) && digit(j + 3) && !digit(j + 4) {
                j += 4;
            }
        }
        if at(j) == Some('.') && digit(j + 1) {
            j += 1;
            while digit(j) {
                j += 1;
            }
        }
        if at(j) == Some('/') && digit(j + 1) {
            j += 1;
            while digit(j) {
                j += 1;
            }
            if at(j) == Some('.') && digit(j + 1) {
                j += 1;
                while digit(j) {
                    j += 1;
                }
            }
        }
        if !f(&text[offset(i)..offset(j)]) {
            return;
        }
        i = j;
    }
}

fn extract_choice(text: &str) -> Option<(String, &'static str)> {
    if let Some(content) = last_boxed(text) {
        if let Some(letter) = leading_letter(&normalize(&content)).or_else(|| last_standalone_letter(&content)) {
            return Some((letter.to_string(), "boxed"));
        }
    }
    if let Some(letter) = letter_after_answer_phrase(text) {
        return Some((letter.to_string(), "the answer is"));
    }
    last_standalone_letter(text).map(|l| (l.to_string(), "choice"))
}

/// A choice letter at the start of a normalised answer: "B", "(b)", "B)42", "B.", "B:", "Option B".
pub(super) fn leading_letter(norm: &str) -> Option<char> {
    let s = norm.trim();
    let s = ["option", "choice"]
        .iter()
        .find_map(|w| s.get(..w.len()).filter(|head| head.eq_ignore_ascii_case(w)).map(|_| s[w.len()..].trim_start()))
        .unwrap_or(s);
    let (s, paren) = match s.strip_prefix('(') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let mut chars = s.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if !('A'..='E').contains(&c) {
        return None;
    }
    let next = chars.next();
    let ok = if paren { next == Some(')') } else { matches!(next, None | Some(')' | '.' | ':')) };
    ok.then_some(c)
}

/// The letter right after the last "answer is" / "choice is" / "option is" / "answer:".
fn letter_after_answer_phrase(text: &str) -> Option<char> {
    let lower = text.to_ascii_lowercase();
    let (at, len) = ["answer is", "choice is", "option is", "answer:"]
        .iter()
        .filter_map(|p| lower.rfind(p).map(|at| (at, p.len())))
        .max_by_key(|&(at, _)| at)?;
    let mut rest = &text[at + len..];
    let mut paren = false;
    loop {
        let before = rest;
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '*' | ':' | '$' | '{' | '['));
        if let Some(r) = rest.strip_prefix('(') {
            paren = true;
            rest = r;
        }
        for prefix in
            ["\\textbf", "\\text", "\\mathrm", "\\mathbf", "\\boxed", "option ", "choice ", "Option ", "Choice "]
        {
            if let Some(r) = rest.strip_prefix(prefix) {
                rest = r;
            }
        }
        if rest.len() == before.len() {
            break;
        }
    }
    let mut chars = rest.chars();
    let c = chars.next()?;
    let upper = c.to_ascii_uppercase();
    if !('A'..='E').contains(&upper) || (c.is_ascii_lowercase() && !paren) {
        return None;
    }
    match chars.next() {
        Some(n) if n.is_alphanumeric() => None,
        _ => Some(upper),
    }
}

/// The last capital A–E standing alone, or a lowercase a–e in parentheses.
fn last_standalone_letter(text: &str) -> Option<char> {
    let cs: Vec<char> = text.chars().collect();
    for i in (0..cs.len()).rev() {
        let c = cs[i];
        let prev = if i == 0 { None } else { Some(cs[i - 1]) };
        let next = cs.get(i + 1).copied();
        if ('a'..='e').contains(&c) && prev == Some('(') && next == Some(')') {
            return Some(c.to_ascii_uppercase());
        }
        if !('A'..='E').contains(&c) {
            continue;
        }
        if prev.is_some_and(|p| p.is_alphanumeric() || p == '\\') || next.is_some_and(|n| n.is_alphanumeric()) {
            continue;
        }
        if c == 'A' && is_sentence_article(&cs, i) {
            continue;
        }
        return Some(c);
    }
    None
}

/// "A" followed by " word" at the start of a sentence or line: the article, not a choice.
fn is_sentence_article(cs: &[char], i: usize) -> bool {
    let word_follows = cs.get(i + 1) == Some(&' ') && cs.get(i + 2).is_some_and(|c| c.is_lowercase());
    if !word_follows {
        return false;
    }
    let before = cs[..i].iter().rev().find(|c| **c != ' ' && **c != '\t');
    matches!(before, None | Some('.' | '!' | '?' | '\n' | '"' | '*' | '#' | ':'))
}
