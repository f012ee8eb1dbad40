//! Answer extraction and grading: completion text → final answer → verdict against the reference.
//!
//! The rules follow the Qwen2.5-Math evaluation toolkit as used by the DynTS paper:
//! `evaluation/parser.py` (`extract_answer`, `strip_string`, `choice_answer_clean`) and
//! `evaluation/grader.py` (`math_equal`, `numeric_equal`, `compare_lists`, `compare_matrices`),
//! re-implemented on std alone. Where the toolkit calls sympy, this module evaluates LaTeX
//! numerically instead (`latex.rs`); symbolic algebra beyond numeric evaluation (at fixed sample
//! points for expressions with variables) is out of scope.
//!
//! Layout: `extract.rs` (completion → answer text), `normalize.rs` (`strip_string`; the toolkit's
//! readings of number words, `j` and `\func(x)` in `spellings.rs`), `latex.rs` (recursive-descent
//! numeric evaluator), `equiv.rs` (the `math_equal` chain). Every entry point is
//! total: no input panics, and each grading is bounded by a step budget and a 1 s wall clock.

mod braces;
mod equiv;
mod extract;
mod latex;
mod normalize;
mod spellings;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

/// How a dataset's answers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// A single number (gsm8k).
    Numeric,
    /// Free-form LaTeX: numbers, fractions, radicals, tuples, intervals, sets, matrices, expressions.
    Math,
    /// One option letter A–E (gpqa_diamond).
    MultipleChoice,
}

/// The answer found in a completion, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The answer text as written (not normalised), or `None` if nothing usable was found.
    pub answer: Option<String>,
    /// Whether the completion closed its thinking with `</think>` (only the text after it is read).
    pub think_closed: bool,
    /// One of [`EXTRACTION_METHODS`].
    pub method: &'static str,
}

/// The rules an answer can be found by, in the order they are tried (`choice` for letters).
pub const EXTRACTION_METHODS: &[&str] = &["boxed", "the answer is", "final answer is", "choice", "last number", "none"];

/// A grading decision and its reason, e.g. "exact match after normalisation", "not equal".
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub correct: bool,
    pub reason: String,
}

/// Relative tolerance of numeric comparisons (`grader.py` `numeric_equal`: `isclose(rel_tol=1e-4)`).
pub(crate) const REL_TOL: f64 = 1e-4;
/// Answers longer than this (after normalisation) are compared as strings only.
pub(crate) const MAX_EVAL_LEN: usize = 2000;
/// Wall-clock limit of one grading.
pub(crate) const TIME_LIMIT: Duration = Duration::from_secs(1);
/// Step limit of one grading (parser nodes, element comparisons).
pub(crate) const MAX_STEPS: u64 = 2_000_000;

/// Finds the final answer in a model completion (see `extract.rs` for the rules).
pub fn extract_answer(completion: &str, kind: AnswerKind) -> Extracted {
    extract::extract_answer(completion, kind)
}

/// A completion graded against its dataset's reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Graded {
    pub extracted: Extracted,
    /// The reference answer in comparable form ([`reference_answer`]).
    pub reference: String,
    pub verdict: Verdict,
}

/// Extracts the answer of `completion` and grades it against the dataset's raw reference.
///
/// When the reference is an option letter ("C", "(C)") and the answer found is not one, the
/// completion is read again for a choice letter, as the toolkit's `math_eval.py` does for
/// free-form datasets that hold some multiple-choice questions (MATH, gaokao).
pub fn grade_completion(completion: &str, raw_reference: &str, dataset: &str, kind: AnswerKind) -> Graded {
    let reference = reference_answer(raw_reference, dataset);
    let mut extracted = extract_answer(completion, kind);
    if kind != AnswerKind::MultipleChoice && equiv::bare_letter(&normalize(&reference)).is_some() {
        let is_letter = extracted.answer.as_deref().is_some_and(|a| extract::leading_letter(&normalize(a)).is_some());
        if !is_letter {
            let choice = extract_answer(completion, AnswerKind::MultipleChoice);
            if choice.answer.is_some() {
                extracted = choice;
            }
        }
    }
    let verdict = grade(extracted.answer.as_deref(), &reference, kind);
    Graded { extracted, reference, verdict }
}

/// The dataset's reference answer in comparable form.
///
/// gsm8k (and its train split): the number after the last `####`, commas removed. aime*: zero padding stripped ("007" →
/// "7"). amc*: integral floats lose ".0" ("27.0" → "27"). Math-kind datasets whose raw answer is a
/// whole solution (the full MATH set has only `solution`): the last `\boxed{}` content. Otherwise
/// the trimmed text.
pub fn reference_answer(raw: &str, dataset: &str) -> String {
    let name = dataset_key(dataset);
    let raw = raw.trim();
    if name.starts_with("gsm8k") {
        let tail = match raw.rfind("####") {
            Some(at) => &raw[at + 4..],
            None => raw,
        };
        let line = tail.trim().lines().next().unwrap_or("").trim();
        return line.replace(',', "");
    }
    if name.starts_with("aime") && !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let stripped = raw.trim_start_matches('0');
        return if stripped.is_empty() { "0".to_string() } else { stripped.to_string() };
    }
    if name.starts_with("amc") {
        if let Some(int) = integral_float(raw) {
            return int;
        }
    }
    if kind_for_dataset(dataset) == Some(AnswerKind::Math) && raw.contains("\\boxed") {
        if let Some(content) = extract::last_boxed(raw) {
            return content.trim().to_string();
        }
    }
    raw.to_string()
}

/// Grades a prediction against a reference (see `equiv.rs` for the order of the checks).
pub fn grade(prediction: Option<&str>, reference: &str, kind: AnswerKind) -> Verdict {
    let mut budget = Budget::new(MAX_STEPS, TIME_LIMIT);
    equiv::grade(prediction, reference, kind, &mut budget)
}

/// `strip_string`: the canonical text form of an answer (see `normalize.rs`).
pub fn normalize(s: &str) -> String {
    normalize::normalize(s)
}

/// The answer kind of a dataset name (case-insensitive, `-` read as `_`), or `None` if unknown.
pub fn kind_for_dataset(name: &str) -> Option<AnswerKind> {
    let name = dataset_key(name);
    match name.as_str() {
        n if n.starts_with("gsm8k") => Some(AnswerKind::Numeric),
        n if n.starts_with("synthetic") => Some(AnswerKind::Numeric),
        "math" | "math500" | "math_500" | "gaokao2023en" => Some(AnswerKind::Math),
        n if n.starts_with("aime") || n.starts_with("amc") => Some(AnswerKind::Math),
        n if n.starts_with("gpqa") => Some(AnswerKind::MultipleChoice),
        _ => None,
    }
}

fn dataset_key(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

/// "27.0" / "-3.00" → the integer text; anything else → `None`.
fn integral_float(s: &str) -> Option<String> {
    let (int, frac) = s.split_once('.')?;
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.is_empty() || !frac.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(int.to_string())
}

/// Why a bounded computation stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The step budget or the wall clock ran out.
    Timeout,
}

/// Work bound of one grading: a step counter and a wall-clock deadline (checked every 1024 steps).
pub(crate) struct Budget {
    start: Instant,
    limit: Duration,
    steps: u64,
    max_steps: u64,
    /// Set when an evaluation was refused for a size limit (depth, exponent, overflow, length).
    pub(crate) limit_hit: bool,
}

impl Budget {
    pub(crate) fn new(max_steps: u64, limit: Duration) -> Self {
        Budget { start: Instant::now(), limit, steps: 0, max_steps, limit_hit: false }
    }

    /// Counts one step; fails once the steps or the time are spent.
    pub(crate) fn tick(&mut self) -> Result<(), Stop> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(Stop::Timeout);
        }
        if self.steps.is_multiple_of(1024) {
            self.check_time()?;
        }
        Ok(())
    }

    pub(crate) fn check_time(&self) -> Result<(), Stop> {
        if self.start.elapsed() > self.limit {
            Err(Stop::Timeout)
        } else {
            Ok(())
        }
    }
}
