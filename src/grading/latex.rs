//! Numeric evaluation of normalised LaTeX answers: a small recursive-descent parser standing in
//! for the sympy path of the Qwen2.5-Math toolkit's `grader.py` (`symbolic_equal`: `parse_latex`
//! then `N()`), so that `2\sqrt{3}` equals `\sqrt{12}` and `\pi/2` equals 1.5707963.
//!
//! Grammar: `+ -` over `* / \cdot \times \div` and juxtaposition (`2\sqrt{3}`, `3\pi`, `2(x+1)`),
//! unary signs, `^` (a braced group, a signed number literal, or one atom: `2^{10}`, `2^10`,
//! `x^-1`), atoms `\frac{a}{b}` (arguments braced or one token), `\sqrt{x}`, `\sqrt[n]{x}`, `\pi`,
//! numbers, `( )`, `{ }`, and single-letter variables when values are supplied. Anything else (other
//! commands, `=`, `,`, `\infty`, `e` as a constant) is a parse error: there is no symbolic algebra.
//!
//! Bounds: nesting depth 96 (groups and atoms), exponents |e| ≤ 1024, every value must stay finite, and every atom
//! costs one step of the grading [`Budget`].

use super::{Budget, Stop};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EvalError {
    /// Not an expression this evaluator understands.
    Parse,
    /// Refused by a size bound (depth, exponent, overflow).
    Limit,
    /// The grading budget ran out.
    Stop(Stop),
}

impl From<Stop> for EvalError {
    fn from(stop: Stop) -> Self {
        EvalError::Stop(stop)
    }
}

type R = Result<f64, EvalError>;

const MAX_DEPTH: usize = 96;
const MAX_EXPONENT: f64 = 1024.0;

/// Evaluates `s`; letters are variables looked up in `vars` (a parse error if absent).
pub(super) fn eval(s: &str, vars: &[(char, f64)], budget: &mut Budget) -> R {
    let mut p = Parser { c: s.chars().collect(), i: 0, depth: 0, vars, budget };
    let v = p.expr()?;
    p.skip_ws();
    if p.i != p.c.len() {
        return Err(EvalError::Parse);
    }
    finite(v)
}

/// The single-letter variables of `s` (sorted), skipping command names; `None` if `s` holds a
/// run of three or more letters (a word such as "Evelyn", not a product of variables).
pub(super) fn variables(s: &str) -> Option<Vec<char>> {
    let cs: Vec<char> = s.chars().collect();
    let mut vars = Vec::new();
    let mut run = 0;
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '\\' {
            i += 1;
            while i < cs.len() && cs[i].is_ascii_alphabetic() {
                i += 1;
            }
            run = 0;
            continue;
        }
        if c.is_ascii_alphabetic() {
            run += 1;
            if run >= 3 {
                return None;
            }
            if !vars.contains(&c) {
                vars.push(c);
            }
        } else {
            run = 0;
        }
        i += 1;
    }
    vars.sort_unstable();
    Some(vars)
}

/// The value of variable `c` at sample point `trial`: spread over [0.7, 2.3], distinct per letter.
pub(super) fn sample(c: char, trial: usize) -> f64 {
    let k = c as u32 as f64;
    let frac = (k * 0.618_033_988_749_895 + trial as f64 * 0.414_213_562_373_095 + 0.1).fract();
    0.7 + 1.6 * frac
}

fn finite(v: f64) -> R {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(EvalError::Limit)
    }
}

fn div(a: f64, b: f64) -> R {
    if b == 0.0 {
        return Err(EvalError::Parse);
    }
    finite(a / b)
}

fn pow(base: f64, e: f64) -> R {
    if !e.is_finite() || e.abs() > MAX_EXPONENT {
        return Err(EvalError::Limit);
    }
    if base < 0.0 && e.fract() != 0.0 {
        return Err(EvalError::Parse);
    }
    if base == 0.0 && e < 0.0 {
        return Err(EvalError::Parse);
    }
    finite(base.powf(e))
}

fn root(x: f64, n: f64) -> R {
    if !n.is_finite() || n == 0.0 || n.abs() > MAX_EXPONENT {
        return Err(EvalError::Parse);
    }
    if x >= 0.0 {
        return finite(x.powf(1.0 / n));
    }
    let odd = n.fract() == 0.0 && (n as i64) % 2 != 0;
    if odd {
        finite(-(-x).powf(1.0 / n))
    } else {
        Err(EvalError::Parse)
    }
}

struct Parser<'a, 'b> {
    c: Vec<char>,
    i: usize,
    depth: usize,
    vars: &'a [(char, f64)],
    budget: &'b mut Budget,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    /// The command name at the cursor (`\name`) and the index after it.
    fn command(&self) -> Option<(String, usize)> {
        if self.peek() != Some('\\') {
            return None;
        }
        let mut j = self.i + 1;
        while self.c.get(j).is_some_and(char::is_ascii_alphabetic) {
            j += 1;
        }
        (j > self.i + 1).then(|| (self.c[self.i + 1..j].iter().collect(), j))
    }

    fn expr(&mut self) -> R {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(EvalError::Limit);
        }
        let mut v = self.term()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some('+') => {
                    self.i += 1;
                    v = finite(v + self.term()?)?;
                }
                Some('-') => {
                    self.i += 1;
                    v = finite(v - self.term()?)?;
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(v)
    }

    fn term(&mut self) -> R {
        let mut v = self.unary()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some('*') => {
                    self.i += 1;
                    v = finite(v * self.unary()?)?;
                }
                Some('/') => {
                    self.i += 1;
                    v = div(v, self.unary()?)?;
                }
                Some('\\') => match self.command() {
                    Some((name, end)) if name == "cdot" || name == "times" => {
                        self.i = end;
                        v = finite(v * self.unary()?)?;
                    }
                    Some((name, end)) if name == "div" => {
                        self.i = end;
                        v = div(v, self.unary()?)?;
                    }
                    Some((name, _)) if matches!(name.as_str(), "frac" | "sqrt" | "pi") => {
                        v = finite(v * self.power()?)?; // implicit: 2\sqrt{3}, 3\pi
                    }
                    _ => break,
                },
                Some(c) if c.is_ascii_digit() || c.is_ascii_alphabetic() || matches!(c, '.' | '(' | '{') => {
                    v = finite(v * self.power()?)?; // implicit: 2(3), (1)(2), 2x
                }
                _ => break,
            }
        }
        Ok(v)
    }

    /// Consumes a run of prefix `+`/`-` signs; true when they make the value negative.
    fn signs(&mut self) -> Result<bool, EvalError> {
        let mut negative = false;
        loop {
            self.skip_ws();
            match self.peek() {
                Some('-') => negative = !negative,
                Some('+') => {}
                _ => break,
            }
            self.i += 1;
            self.budget.tick()?;
        }
        Ok(negative)
    }

    fn unary(&mut self) -> R {
        let negative = self.signs()?;
        let v = self.power()?;
        Ok(if negative { -v } else { v })
    }

    fn power(&mut self) -> R {
        let base = self.primary()?;
        self.skip_ws();
        if self.peek() != Some('^') {
            return Ok(base);
        }
        self.i += 1;
        let e = self.exponent()?;
        pow(base, e)
    }

    fn exponent(&mut self) -> R {
        let negative = self.signs()?;
        let v = match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => self.number()?,
            _ => self.primary()?,
        };
        Ok(if negative { -v } else { v })
    }

    fn primary(&mut self) -> R {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(EvalError::Limit);
        }
        let v = self.atom();
        self.depth -= 1;
        v
    }

    fn atom(&mut self) -> R {
        self.budget.tick()?;
        self.skip_ws();
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some('(') => self.group(')'),
            Some('{') => self.group('}'),
            Some('\\') => {
                let (name, end) = self.command().ok_or(EvalError::Parse)?;
                self.i = end;
                match name.as_str() {
                    "frac" => {
                        let a = self.arg()?;
                        let b = self.arg()?;
                        div(a, b)
                    }
                    "sqrt" => {
                        self.skip_ws();
                        let n = if self.peek() == Some('[') { self.group(']')? } else { 2.0 };
                        let x = self.arg()?;
                        root(x, n)
                    }
                    "pi" => Ok(std::f64::consts::PI),
                    _ => Err(EvalError::Parse),
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.i += 1;
                self.variable(c)
            }
            _ => Err(EvalError::Parse),
        }
    }

    /// The cursor is on an opening bracket; parses the expression up to `close`.
    fn group(&mut self, close: char) -> R {
        self.i += 1;
        let v = self.expr()?;
        self.skip_ws();
        if self.peek() != Some(close) {
            return Err(EvalError::Parse);
        }
        self.i += 1;
        Ok(v)
    }

    /// A macro argument: a braced group or one token (`\frac12`, `\frac\pi2`).
    fn arg(&mut self) -> R {
        self.skip_ws();
        match self.peek() {
            Some('{') => self.group('}'),
            Some(c) if c.is_ascii_digit() => {
                self.i += 1;
                Ok(f64::from(c as u8 - b'0'))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.i += 1;
                self.variable(c)
            }
            Some('\\') => self.primary(),
            _ => Err(EvalError::Parse),
        }
    }

    fn number(&mut self) -> R {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.peek() == Some('.') && self.c.get(self.i + 1).is_some_and(char::is_ascii_digit) {
            self.i += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if self.i == start {
            return Err(EvalError::Parse);
        }
        let literal: String = self.c[start..self.i].iter().collect();
        let v: f64 = literal.parse().map_err(|_| EvalError::Parse)?;
        finite(v)
    }

    fn variable(&self, c: char) -> R {
        self.vars.iter().find(|(name, _)| *name == c).map(|&(_, v)| v).ok_or(EvalError::Parse)
    }
}
