//! Spellings that mean a number or a plain form, read as the Qwen2.5-Math toolkit reads them:
//! number words, `j` for the imaginary unit, parentheses around a function's argument; and the
//! word-boundary replacement they and "inf" use.

/// A whole answer spelled in English number words ("seventeen", "two hundred", "one thousand
/// two hundred and five", "twenty-one"), as the toolkit's `word2number` reads it; `None` when any
/// word is not one (so "a" or "one of them" stay text).
pub(super) fn number_words(s: &str) -> Option<String> {
    const SMALL: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: &[&str] = &["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    let lower = s.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split([' ', '-']).filter(|w| !w.is_empty() && *w != "and").collect();
    let (mut total, mut group, mut any) = (0u64, 0u64, false);
    for w in &words {
        if let Some(n) = SMALL.iter().position(|x| x == w) {
            group += n as u64;
        } else if let Some(n) = TENS.iter().position(|x| x == w) {
            group += 20 + 10 * n as u64;
        } else if *w == "hundred" {
            group = group.max(1) * 100;
        } else if let Some(scale) = match *w {
            "thousand" => Some(1_000u64),
            "million" => Some(1_000_000),
            "billion" => Some(1_000_000_000),
            _ => None,
        } {
            total += group.max(1) * scale;
            group = 0;
        } else {
            return None;
        }
        any = true;
    }
    any.then(|| (total + group).to_string())
}

/// `j` for the imaginary unit ("3+4j", Python's spelling) when it is the answer's only letter
/// and the answer holds no command.
pub(super) fn imaginary_j(s: &str) -> String {
    let mut letters = s.chars().filter(char::is_ascii_alphabetic);
    if s.contains('\\') || letters.clone().next().is_none() || !letters.all(|c| c == 'j') {
        return s.to_string();
    }
    s.replace('j', "i")
}

/// `\cot(x)` → `\cot x`, `\sin(3x)` → `\sin3x`: parentheses around a function's plain argument
/// (letters and digits) are how the same answer is often written.
pub(super) fn function_parens(s: &str) -> String {
    const FUNCTIONS: &[&str] = &[
        "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "ln", "log",
        "exp",
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let name = &rest[..name_len];
        out.push('\\');
        out.push_str(name);
        rest = &rest[name_len..];
        if !FUNCTIONS.contains(&name) {
            continue;
        }
        let Some(inner) = rest.strip_prefix('(') else { continue };
        let len = inner.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if len == 0 || inner.as_bytes().get(len) != Some(&b')') {
            continue;
        }
        if inner.as_bytes()[0].is_ascii_alphabetic() {
            out.push(' ');
        }
        out.push_str(&inner[..len]);
        rest = &inner[len + 1..];
    }
    out.push_str(rest);
    out
}

/// `word` replaced where no letter touches it.
pub(super) fn replace_word(s: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(|c| c.is_ascii_alphabetic() || c == '\\')
            || after.is_some_and(|c| c.is_ascii_alphabetic())
        {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}
