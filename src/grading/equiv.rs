//! Answer equivalence: the Qwen2.5-Math toolkit's `grader.py` `math_equal` chain, on std alone.
//!
//! Both sides are normalised (`normalize.rs`), then, in order, the first check that applies decides:
//! 1. exact string equality, ignoring case (as `math_equal`'s `.lower()` comparison);
//! 2. choice letters, when the kind is `MultipleChoice` or the reference is a bare letter
//!    "(C)"/"C": the letter of "(B)", `\text{(B)}`, "B) 42", "B." compared case-insensitively;
//! 3. plain numbers: |a−b| ≤ 1e-4·max(|a|,|b|) (`numeric_equal`: `isclose(rel_tol=1e-4)`), with a
//!    1e-12 absolute floor for float noise, except that where either side is an integer the
//!    values must be equal (the toolkit's tolerance also accepts 95196 for 95200 and 4.0002 for
//!    4: it is meant for rounded decimals); a side that carried `%` may be read as v or v/100, so
//!    "10%" equals both 10 and 0.1 (the toolkit's `include_percentage`, which however also accepts
//!    v·100 and v/100 when neither side has a percent sign: here only a written percent does);
//! 4. structures, element by element with this same chain: tuples and intervals (brackets must
//!    match exactly: `(0,1]` ≠ `(0,1)`), sets `\{…\}` and unbracketed comma lists (both
//!    order-insensitive multisets: "1,2,3" = "3,2,1" = `\{3,2,1\}`), a bare list against a
//!    parenthesised tuple (ordered, as the toolkit strips the brackets), unions over `\cup`
//!    (order-insensitive), `pmatrix` element-wise (a one-row or one-column matrix also against a
//!    parenthesised tuple); `a\pm b` stands for the two-element set {a+(b), a−(b)};
//! 5. LaTeX evaluated numerically (`latex.rs`) with the tolerance of 3; a mixed number
//!    `1\frac{4}{5}` (integer then a proper fraction of integers, nothing else) is 1.8;
//! 6. equations `L=R` (both sides): L−R equal to ±(L′−R′) at three sample points;
//! 7. expressions in the same single-letter variables: equal at three sample points.
//!
//! For `Numeric`, a prediction "18 eggs" (a number then only letters) counts as its number.
//! Single-letter left-hand sides ("x=5", "y = 2x+3") are removed by normalisation. Symbolic algebra
//! beyond numeric evaluation (simplification, trigonometry, logarithms, `e`) is out of scope.
//!
//! Verdict reasons: the step that matched, or "no answer extracted" (no or empty prediction),
//! "not equal", "could not parse" (nothing matched and some side exceeded a bound: 2000 characters,
//! nesting, exponent, overflow), "timed out" (the step budget or the 1 s clock ran out).

use super::extract::leading_letter;
use super::latex::{self, EvalError};
use super::normalize::normalize_full;
use super::{AnswerKind, Budget, Stop, Verdict, MAX_EVAL_LEN, REL_TOL};

/// Nesting depth of structures compared element-wise.
const MAX_NEST: usize = 8;
const TRIALS: usize = 3;

pub(super) fn grade(prediction: Option<&str>, reference: &str, kind: AnswerKind, budget: &mut Budget) -> Verdict {
    let Some(prediction) = prediction else { return verdict(false, "no answer extracted") };
    let p = normalize_full(prediction);
    if p.text.is_empty() {
        return verdict(false, "no answer extracted");
    }
    let r = normalize_full(reference);
    if budget.check_time().is_err() {
        return verdict(false, "timed out");
    }
    match compare(&p.text, p.percent, &r.text, r.percent, kind, budget) {
        Ok(Some(reason)) => verdict(true, reason),
        Ok(None) if budget.limit_hit => verdict(false, "could not parse"),
        Ok(None) => verdict(false, "not equal"),
        Err(Stop::Timeout) => verdict(false, "timed out"),
    }
}

fn verdict(correct: bool, reason: &str) -> Verdict {
    Verdict { correct, reason: reason.to_string() }
}

type Outcome = Result<Option<&'static str>, Stop>;

fn compare(p: &str, pp: bool, r: &str, rp: bool, kind: AnswerKind, budget: &mut Budget) -> Outcome {
    if p.to_lowercase() == r.to_lowercase() {
        return Ok(Some("exact match after normalisation"));
    }
    let ref_letter = match kind {
        AnswerKind::MultipleChoice => leading_letter(r),
        _ => bare_letter(r),
    };
    if let Some(letter) = ref_letter {
        return Ok((leading_letter(p) == Some(letter)).then_some("choice letter equal"));
    }
    let p = match kind {
        AnswerKind::Numeric => number_before_words(p).unwrap_or(p),
        _ => p,
    };
    equal_values(p, pp, r, rp, 0, budget)
}

/// "(C)" or "C" with a capital A–E: a reference that is an option letter.
pub(super) fn bare_letter(r: &str) -> Option<char> {
    let inner = r.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(r);
    let mut chars = inner.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'A'..='E'), None) => Some(c),
        _ => None,
    }
}

/// Numeric answers: "18eggs" (spaces already removed) → "18".
fn number_before_words(s: &str) -> Option<&str> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let digits = body.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let end = s.len() - body.len() + digits;
    let tail = &s[end..];
    let number = &s[..end];
    (digits > 0 && tail.len() >= 2 && tail.bytes().all(|b| b.is_ascii_alphabetic()) && plain_number(number).is_some())
        .then_some(number)
}

/// The full chain on normalised text (steps 1, 3–7); elements of structures recurse here.
fn equal_values(a: &str, ap: bool, b: &str, bp: bool, depth: usize, budget: &mut Budget) -> Outcome {
    budget.tick()?;
    if a.to_lowercase() == b.to_lowercase() {
        return Ok(Some("exact match after normalisation"));
    }
    if let (Some(x), Some(y)) = (plain_number(a), plain_number(b)) {
        // The tolerance forgives rounded decimals; an integer is matched only by its own value.
        if is_integer(a) || is_integer(b) {
            return Ok(exact_pct(x, ap, y, bp).then_some("numeric equal"));
        }
        return Ok(close_pct(x, ap, y, bp).then_some("numeric equal (rel tol 1e-4)"));
    }
    if a.len() > MAX_EVAL_LEN || b.len() > MAX_EVAL_LEN || depth > MAX_NEST {
        budget.limit_hit = true;
        return Ok(None);
    }
    match (shape(a), shape(b)) {
        (Shape::Scalar, Shape::Scalar) => scalar_equal(a, ap, b, bp, budget),
        (sa, sb) => compare_shapes(sa, sb, depth, budget),
    }
}

/// A plain decimal number: "-12", "0.5", "1e-5"; `None` for anything else (no "inf", no "nan").
fn plain_number(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) || (mantissa.ends_with('.') && int.is_empty())
    {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        if e.is_empty() || e.len() > 3 || !digits(e) {
            return None;
        }
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// "12", "-7", "95200": digits only, after an optional sign.
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn close(a: f64, b: f64) -> bool {
    let diff = (a - b).abs();
    diff <= REL_TOL * a.abs().max(b.abs()) || diff <= 1e-12
}

/// Equal when any reading matches: a percent side reads as v or v/100.
fn close_pct(a: f64, ap: bool, b: f64, bp: bool) -> bool {
    any_reading(a, ap, b, bp, close)
}

/// As [`close_pct`], equal up to float noise only.
fn exact_pct(a: f64, ap: bool, b: f64, bp: bool) -> bool {
    any_reading(a, ap, b, bp, |x, y| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0))
}

fn any_reading(a: f64, ap: bool, b: f64, bp: bool, equal: impl Fn(f64, f64) -> bool) -> bool {
    let reads = |v: f64, pct: bool| if pct { vec![v, v / 100.0] } else { vec![v] };
    reads(a, ap).iter().any(|&x| reads(b, bp).iter().any(|&y| equal(x, y)))
}

/// Step 5–7 for two scalars.
fn scalar_equal(a: &str, ap: bool, b: &str, bp: bool, budget: &mut Budget) -> Outcome {
    if let (Some(x), Some(y)) = (constant(a, budget)?, constant(b, budget)?) {
        return Ok(close_pct(x, ap, y, bp).then_some("latex numeric equal (rel tol 1e-4)"));
    }
    if let (Some(ea), Some(eb)) = (split_equation(a), split_equation(b)) {
        return equations_equal(ea, eb, budget);
    }
    expressions_equal(a, b, budget)
}

/// The value of a constant expression, or `None` (variables, unknown syntax, size limits).
fn constant(s: &str, budget: &mut Budget) -> Result<Option<f64>, Stop> {
    if let Some(v) = mixed_number(s) {
        return Ok(Some(v));
    }
    evaluate(s, &[], budget)
}

fn evaluate(s: &str, vars: &[(char, f64)], budget: &mut Budget) -> Result<Option<f64>, Stop> {
    match latex::eval(s, vars, budget) {
        Ok(v) => Ok(Some(v)),
        Err(EvalError::Parse) => Ok(None),
        Err(EvalError::Limit) => {
            budget.limit_hit = true;
            Ok(None)
        }
        Err(EvalError::Stop(stop)) => Err(stop),
    }
}

/// `1\frac{4}{5}` → 1.8, `-2\frac{1}{2}` → −2.5: an integer then a proper fraction of integers.
fn mixed_number(s: &str) -> Option<f64> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, rest) = body.split_once("\\frac{")?;
    let (num, rest) = rest.split_once("}{")?;
    let den = rest.strip_suffix('}')?;
    let int = |t: &str| !t.is_empty() && t.len() <= 15 && t.bytes().all(|b| b.is_ascii_digit());
    if !(int(whole) && int(num) && int(den)) {
        return None;
    }
    let (w, n, d): (f64, f64, f64) = (whole.parse().ok()?, num.parse().ok()?, den.parse().ok()?);
    if d == 0.0 || n >= d {
        return None;
    }
    let v = w + n / d;
    Some(if negative { -v } else { v })
}

/// "L=R" with exactly one `=` that is not part of `<=`, `>=`, `!=`.
fn split_equation(s: &str) -> Option<(&str, &str)> {
    if s.matches('=').count() != 1 {
        return None;
    }
    let (l, r) = s.split_once('=')?;
    if l.is_empty() || r.is_empty() || l.ends_with(['<', '>', '!']) {
        return None;
    }
    Some((l, r))
}

fn same_variables(sides: &[&str]) -> Option<Vec<char>> {
    let mut all: Vec<char> = Vec::new();
    for side in sides {
        for v in latex::variables(side)? {
            if !all.contains(&v) {
                all.push(v);
            }
        }
    }
    all.sort_unstable();
    (!all.is_empty()).then_some(all)
}

fn equations_equal((la, ra): (&str, &str), (lb, rb): (&str, &str), budget: &mut Budget) -> Outcome {
    let Some(vars) = same_variables(&[la, ra, lb, rb]) else { return Ok(None) };
    let a_vars = same_variables(&[la, ra]);
    if a_vars.as_ref() != same_variables(&[lb, rb]).as_ref() {
        return Ok(None);
    }
    let (mut same, mut opposite) = (true, true);
    for trial in 0..TRIALS {
        let point: Vec<(char, f64)> = vars.iter().map(|&c| (c, latex::sample(c, trial))).collect();
        let diff = |l: &str, r: &str, budget: &mut Budget| -> Result<Option<f64>, Stop> {
            Ok(match (evaluate(l, &point, budget)?, evaluate(r, &point, budget)?) {
                (Some(x), Some(y)) => Some(x - y),
                _ => None,
            })
        };
        let (Some(da), Some(db)) = (diff(la, ra, budget)?, diff(lb, rb, budget)?) else { return Ok(None) };
        same &= close(da, db);
        opposite &= close(da, -db);
    }
    Ok((same || opposite).then_some("equation equal at sample points"))
}

fn expressions_equal(a: &str, b: &str, budget: &mut Budget) -> Outcome {
    let (Some(va), Some(vb)) = (latex::variables(a), latex::variables(b)) else { return Ok(None) };
    if va.is_empty() || va != vb {
        return Ok(None);
    }
    for trial in 0..TRIALS {
        let point: Vec<(char, f64)> = va.iter().map(|&c| (c, latex::sample(c, trial))).collect();
        let (Some(x), Some(y)) = (evaluate(a, &point, budget)?, evaluate(b, &point, budget)?) else {
            return Ok(None);
        };
        if !close(x, y) {
            return Ok(None);
        }
    }
    Ok(Some("expression equal at sample points"))
}

#[derive(Debug)]
enum Shape {
    Scalar,
    Matrix(Vec<Vec<String>>),
    /// `(…)`, `[…]`, `(…]`, `[…)` with at least two items.
    Bracketed(u8, u8, Vec<String>),
    /// `{…}` (from `\{…\}`), order-insensitive.
    Set(Vec<String>),
    /// Unbracketed "a,b,c" (or one `a\pm b`), order-insensitive.
    List(Vec<String>),
    /// Parts joined by `\cup`, order-insensitive.
    Union(Vec<String>),
}

fn shape(s: &str) -> Shape {
    let bytes = s.as_bytes();
    let (first, last) = match (bytes.first(), bytes.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return Shape::Scalar,
    };
    if let Some(body) = s.strip_prefix("\\begin{pmatrix}").and_then(|t| t.strip_suffix("\\end{pmatrix}")) {
        let rows: Vec<Vec<String>> = split_top(body, "\\\\")
            .into_iter()
            .filter(|row| !row.trim().is_empty())
            .map(|row| split_top(row, "&").into_iter().map(|c| c.trim().to_string()).collect())
            .collect();
        return Shape::Matrix(rows);
    }
    let parts = split_top(s, "\\cup");
    if parts.len() > 1 {
        return Shape::Union(parts.into_iter().map(str::to_string).collect());
    }
    let wraps = |open: usize| closing(bytes, open) == Some(bytes.len() - 1);
    if matches!(first, b'(' | b'[') && matches!(last, b')' | b']') && wraps(0) {
        let items = split_top(&s[1..s.len() - 1], ",");
        if items.len() >= 2 {
            return Shape::Bracketed(first, last, expand_pm(&items));
        }
    }
    if first == b'{' && last == b'}' && wraps(0) {
        let inner = &s[1..s.len() - 1];
        let items = if inner.is_empty() { Vec::new() } else { expand_pm(&split_top(inner, ",")) };
        return Shape::Set(items);
    }
    let items = split_top(s, ",");
    if items.len() >= 2 {
        return Shape::List(expand_pm(&items));
    }
    let expanded = expand_pm(&items);
    if expanded.len() == 2 {
        return Shape::List(expanded);
    }
    Shape::Scalar
}

/// Index of the bracket closing the one at `open`; `( [ {` and `) ] }` count alike so that
/// half-open intervals `(0,1]` match.
fn closing(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth <= 1 {
                    return (depth == 1).then_some(k);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

/// Splits at top-level (bracket depth 0) occurrences of `sep`.
fn split_top<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let bytes = s.as_bytes();
    let sep = sep.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i64;
    let mut start = 0;
    let mut k = 0;
    while k < bytes.len() {
        match bytes[k] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && bytes[k..].starts_with(sep) {
            parts.push(&s[start..k]);
            k += sep.len();
            start = k;
            continue;
        }
        k += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// `a\pm b` → `a+(b)`, `a-(b)`; other items unchanged.
fn expand_pm(items: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut parts = split_top(item, "\\pm");
        if parts.len() != 2 {
            parts = split_top(item, "\\mp");
        }
        match parts.as_slice() {
            [a, b] if !b.is_empty() => {
                out.push(format!("{a}+({b})"));
                out.push(format!("{a}-({b})"));
            }
            _ => out.push(item.to_string()),
        }
    }
    out
}

fn compare_shapes(a: Shape, b: Shape, depth: usize, budget: &mut Budget) -> Outcome {
    use Shape::*;
    let tuple = "tuple element-wise equal";
    match (a, b) {
        (Matrix(x), Matrix(y)) => {
            if x.len() != y.len() || x.iter().zip(&y).any(|(r, s)| r.len() != s.len()) {
                return Ok(None);
            }
            let (x, y): (Vec<String>, Vec<String>) = (x.concat(), y.concat());
            Ok(ordered(&x, &y, depth, budget)?.then_some("matrix element-wise equal"))
        }
        (Matrix(m), Bracketed(b'(', b')', t)) | (Bracketed(b'(', b')', t), Matrix(m)) => {
            let is_vector = m.len() == 1 || m.iter().all(|row| row.len() == 1);
            Ok((is_vector && ordered(&m.concat(), &t, depth, budget)?).then_some(tuple))
        }
        (Bracketed(o1, c1, x), Bracketed(o2, c2, y)) => {
            if o1 != o2 || c1 != c2 {
                return Ok(None);
            }
            let reason = if (o1, c1) == (b'(', b')') { tuple } else { "interval equal" };
            Ok(ordered(&x, &y, depth, budget)?.then_some(reason))
        }
        (Set(x) | List(x), Set(y) | List(y)) => {
            Ok(unordered(&x, &y, depth, budget)?.then_some("set equal (unordered)"))
        }
        (List(x), Bracketed(b'(', b')', y)) | (Bracketed(b'(', b')', x), List(y)) => {
            Ok(ordered(&x, &y, depth, budget)?.then_some(tuple))
        }
        (Union(x), Union(y)) => Ok(unordered(&x, &y, depth, budget)?.then_some("union equal (unordered)")),
        _ => Ok(None),
    }
}

fn element_equal(a: &str, b: &str, depth: usize, budget: &mut Budget) -> Result<bool, Stop> {
    Ok(equal_values(a.trim(), false, b.trim(), false, depth + 1, budget)?.is_some())
}

fn ordered(x: &[String], y: &[String], depth: usize, budget: &mut Budget) -> Result<bool, Stop> {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (a, b) in x.iter().zip(y) {
        if !element_equal(a, b, depth, budget)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Multiset equality, greedy: each element of `x` takes the first unused equal element of `y`.
fn unordered(x: &[String], y: &[String], depth: usize, budget: &mut Budget) -> Result<bool, Stop> {
    if x.len() != y.len() {
        return Ok(false);
    }
    let mut used = vec![false; y.len()];
    for a in x {
        let mut found = false;
        for (k, b) in y.iter().enumerate() {
            if !used[k] && element_equal(a, b, depth, budget)? {
                used[k] = true;
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}
