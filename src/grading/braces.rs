//! LaTeX arguments and braces, the last steps of normalisation: `\frac` and `\sqrt` arguments
//! braced, one-token scripts unbraced, `a/b` as `\frac{a}{b}`, outer braces dropped.

const MAX_FIX_DEPTH: usize = 24;

/// Braces the arguments of `\frac` and `\sqrt`: `\frac12` → `\frac{1}{2}`, `\frac1b`, `\frac{72}1`,
/// `\frac\pi2`, `\sqrt2` → `\sqrt{2}`, `\sqrt[3]8` → `\sqrt[3]{8}` (toolkit `_fix_fracs`, `_fix_sqrt`).
pub(super) fn fix_args(s: &str, depth: usize) -> String {
    if depth > MAX_FIX_DEPTH || !s.contains('\\') {
        return s.to_string();
    }
    let cs: Vec<char> = s.chars().collect();
    let pairs = bracket_pairs(&cs);
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < cs.len() {
        if cs[i] != '\\' {
            out.push(cs[i]);
            i += 1;
            continue;
        }
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
        out.push('\\');
        out.push_str(&name);
        i = j;
        let args = match name.as_str() {
            "frac" | "binom" => 2,
            "sqrt" => {
                if cs.get(i) == Some(&'[') {
                    if let Some(close) = pairs[i] {
                        out.extend(&cs[i..=close]);
                        i = close + 1;
                    }
                }
                1
            }
            _ => 0,
        };
        // `\sqrt10` is √1·0 to LaTeX, but a digit run there is written for √10 (the toolkit reads it so).
        if name == "sqrt" && cs.get(i).is_some_and(char::is_ascii_digit) {
            let end = (i..cs.len()).find(|&k| !cs[k].is_ascii_digit()).unwrap_or(cs.len());
            out.push('{');
            out.extend(&cs[i..end]);
            out.push('}');
            i = end;
            continue;
        }
        for _ in 0..args {
            let Some((content, next)) = take_arg(&cs, &pairs, i) else { break };
            out.push('{');
            out.push_str(&fix_args(&content, depth + 1));
            out.push('}');
            i = next;
        }
    }
    out
}

/// For each `{` / `[`, the index of its partner `}` / `]` (each kind matched on its own).
fn bracket_pairs(cs: &[char]) -> Vec<Option<usize>> {
    let mut pairs = vec![None; cs.len()];
    let (mut braces, mut squares) = (Vec::new(), Vec::new());
    for (k, &c) in cs.iter().enumerate() {
        match c {
            '{' => braces.push(k),
            '[' => squares.push(k),
            '}' => {
                if let Some(open) = braces.pop() {
                    pairs[open] = Some(k);
                }
            }
            ']' => {
                if let Some(open) = squares.pop() {
                    pairs[open] = Some(k);
                }
            }
            _ => {}
        }
    }
    pairs
}

/// One macro argument at `i`: a braced group, a command name, or a single character.
fn take_arg(cs: &[char], pairs: &[Option<usize>], mut i: usize) -> Option<(String, usize)> {
    while cs.get(i) == Some(&' ') {
        i += 1;
    }
    match *cs.get(i)? {
        '{' => {
            let close = pairs[i]?;
            Some((cs[i + 1..close].iter().collect(), close + 1))
        }
        '\\' => {
            let j = control_word_end(cs, i);
            (j > i + 1).then(|| (cs[i..j].iter().collect(), j))
        }
        c if c.is_alphanumeric() || c == '.' => Some((c.to_string(), i + 1)),
        _ => None,
    }
}

/// `x^{2}` → `x^2`, `52_{8}` → `52_8` (one character in braces).
pub(super) fn simplify_scripts(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        out.push(c);
        if (c == '^' || c == '_')
            && cs.get(i + 1) == Some(&'{')
            && cs.get(i + 2).is_some_and(|c| c.is_ascii_alphanumeric())
            && cs.get(i + 3) == Some(&'}')
        {
            out.push(cs[i + 2]);
            i += 4;
            continue;
        }
        i += 1;
    }
    out
}

/// "3/4" → `\frac{3}{4}`, "-3/4" → `-\frac{3}{4}` (toolkit `_fix_a_slash_b`, integers only).
pub(super) fn slash_to_frac(s: &str) -> String {
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    if let Some((a, b)) = body.split_once('/') {
        let int = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if int(a) && int(b) {
            return format!("{sign}\\frac{{{a}}}{{{b}}}");
        }
    }
    s.to_string()
}

/// `{5}` → `5` while the outer braces wrap everything and hold no top-level comma (8 layers at most).
pub(super) fn strip_outer_braces(s: &str) -> String {
    let mut s = s.to_string();
    for _ in 0..8 {
        if !(s.len() > 2 && s.starts_with('{') && s.ends_with('}')) {
            break;
        }
        let cs: Vec<char> = s.chars().collect();
        if bracket_pairs(&cs)[0] != Some(cs.len() - 1) {
            break;
        }
        let inner = &cs[1..cs.len() - 1];
        let mut depth = 0i64;
        let mut comma = false;
        for &c in inner {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => comma = true,
                _ => {}
            }
        }
        if comma {
            break;
        }
        s = inner.iter().collect();
    }
    s
}

/// Index just past the letters of the control word whose backslash is at `i` (`i + 1` when the
/// backslash is followed by a non-letter).
pub(super) fn control_word_end(cs: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < cs.len() && cs[j].is_ascii_alphabetic() {
        j += 1;
    }
    j
}
