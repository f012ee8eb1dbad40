//! `synthetic-chain`: kvbench's own reasoning task, generated deterministically from a seed, so it
//! runs offline and on CPU. A problem states a few digit facts, then a chain of
//! statements, each defining the next variable from the previous one and an *older* one, mod 10:
//!
//! ```text
//! question: a=3,b=7,c=1,d=4;e=d+a;f=e-c;g=f+a;?
//! thinking: <think>e=d+a,d=4,a=3,e=7;f=e-c,e=7,c=1,f=6;g=f+a,f=6,a=3,g=9;</think>
//! answer:   \boxed{9}
//! ```
//!
//! (`ops = "+-"`; the committed sets, `ops = "+"`, add only: see datasets/synthetic-chain.toml.)
//! Each thinking line restates its operands' values, so an older operand must be looked up: in the
//! question (a fact) or in an earlier line (a derived value). Why this shape: lengths vary, so a budget bites long problems and spares short ones;
//! some lookups reach the question, which only question-protecting policies (DynTS) keep once it
//! scrolls out of the window, others reach derived values at varying distances, which attention
//! scores can find; facts are reused, derived values mostly once. Whether this ranks policies is
//! for the toy model to show.

use serde::{Deserialize, Serialize};

use crate::data::Question;
use crate::rng::Rng;

/// The knobs of the generator (a dataset definition's `[generator]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainParams {
    pub seed: u64,
    /// Problems in the set.
    pub rows: usize,
    /// Facts stated in the question, inclusive range.
    pub facts: [usize; 2],
    /// Statements, inclusive range; facts + statements ≤ 26 (one letter each).
    pub steps: [usize; 2],
    /// Chance that a statement's older operand is a fact rather than a derived value.
    pub fact_ref: f64,
    /// The operations drawn from, mod 10: `"+-"` or `"+"`. The draw is the same either way, so
    /// one seed gives the same programs whatever the operations.
    pub ops: String,
}

impl ChainParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        let ok = self.facts[0] >= 2
            && self.facts[0] <= self.facts[1]
            && self.steps[0] >= 1
            && self.steps[0] <= self.steps[1]
            && self.facts[1] + self.steps[1] <= 26
            && (0.0..=1.0).contains(&self.fact_ref)
            && self.rows > 0
            && matches!(self.ops.as_str(), "+" | "+-");
        anyhow::ensure!(
            ok,
            "synthetic-chain parameters out of range: {self:?} (facts ≥ 2, facts + steps ≤ 26, ops \"+\" or \"+-\")"
        );
        Ok(())
    }
}

/// One generated problem.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainProblem {
    pub question: String,
    /// The worked thinking, `<think>` … `</think>` included.
    pub thinking: String,
    pub answer: u8,
}

impl ChainProblem {
    /// Thinking and boxed answer: the target of the toy model's training.
    pub fn solution(&self) -> String {
        format!("{}\\boxed{{{}}}", self.thinking, self.answer)
    }
}

fn name(i: usize) -> char {
    (b'a' + i as u8) as char
}

/// Problem `index` of the set: depends only on (seed, index).
pub fn problem(params: &ChainParams, index: usize) -> ChainProblem {
    let mut rng = Rng::derive(params.seed, &[index as u64]);
    let pick = |rng: &mut Rng, lo: usize, hi: usize| lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize;
    let facts = pick(&mut rng, params.facts[0], params.facts[1]);
    let steps = pick(&mut rng, params.steps[0], params.steps[1]);
    let mut values: Vec<u8> = (0..facts).map(|_| (rng.next_u64() % 10) as u8).collect();
    let mut question: Vec<String> =
        vec![(0..facts).map(|i| format!("{}={}", name(i), values[i])).collect::<Vec<_>>().join(",")];
    let mut thinking = String::from("<think>");
    for s in 0..steps {
        let new = facts + s;
        let prev = new - 1;
        // The older operand: a fact, or a derived value before `prev`.
        let derived_older = facts..prev;
        let older = if derived_older.is_empty() || rng.next_f64() < params.fact_ref {
            let candidates: Vec<usize> = (0..facts).filter(|&i| i != prev).collect();
            candidates[(rng.next_u64() % candidates.len() as u64) as usize]
        } else {
            pick(&mut rng, derived_older.start, derived_older.end - 1)
        };
        let plus = rng.next_u64().is_multiple_of(2) || params.ops == "+";
        let (a, b) = (values[prev], values[older]);
        let v = if plus { (a + b) % 10 } else { (a + 10 - b) % 10 };
        let op = if plus { '+' } else { '-' };
        question.push(format!("{}={}{op}{}", name(new), name(prev), name(older)));
        thinking.push_str(&format!(
            "{}={}{op}{},{}={a},{}={b},{}={v};",
            name(new),
            name(prev),
            name(older),
            name(prev),
            name(older),
            name(new)
        ));
        values.push(v);
    }
    question.push("?".into());
    thinking.push_str("</think>");
    ChainProblem { question: question.join(";"), thinking, answer: *values.last().expect("at least one step") }
}

/// The whole set as dataset questions (the reference is the answer digit).
pub fn questions(params: &ChainParams) -> Vec<Question> {
    (0..params.rows)
        .map(|i| {
            let p = problem(params, i);
            Question {
                index: i,
                id: format!("chain-{}-{i}", params.seed),
                question: p.question,
                reference: p.answer.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChainParams {
        ChainParams { seed: 1, rows: 200, facts: [4, 6], steps: [6, 20], fact_ref: 0.4, ops: "+-".into() }
    }

    /// Re-derives every value from the question alone, as a model would have to.
    fn solve(question: &str) -> u8 {
        let mut env = std::collections::HashMap::new();
        let body = question.strip_suffix(";?").unwrap();
        let mut parts = body.split(';');
        for fact in parts.next().unwrap().split(',') {
            let (k, v) = fact.split_once('=').unwrap();
            env.insert(k.to_string(), v.parse::<u8>().unwrap());
        }
        let mut last = 0;
        for stmt in parts {
            let (k, rhs) = stmt.split_once('=').unwrap();
            let (op, (a, b)) = match rhs.split_once('+') {
                Some(ab) => ('+', ab),
                None => ('-', rhs.split_once('-').unwrap()),
            };
            let (a, b) = (env[a], env[b]);
            last = if op == '+' { (a + b) % 10 } else { (a + 10 - b) % 10 };
            env.insert(k.to_string(), last);
        }
        last
    }

    #[test]
    fn the_example_in_the_header_is_what_the_format_means() {
        assert_eq!(solve("a=3,b=7,c=1,d=4;e=d+a;f=e-c;g=f+a;?"), 9);
    }

    #[test]
    fn answers_follow_from_the_question_and_the_set_is_deterministic() {
        let p = params();
        let (a, b) = (questions(&p), questions(&p));
        assert_eq!(a, b);
        let mut lengths = std::collections::BTreeSet::new();
        let mut fact_refs = 0;
        let mut statements = 0;
        for (i, q) in a.iter().enumerate() {
            assert_eq!(solve(&q.question).to_string(), q.reference, "problem {i}: {}", q.question);
            let prob = problem(&p, i);
            assert!(prob.solution().ends_with(&format!("</think>\\boxed{{{}}}", q.reference)));
            lengths.insert(prob.question.len() + prob.thinking.len());
            let facts = q.question.split(';').next().unwrap().split(',').count();
            for stmt in q.question.split(';').skip(1).filter(|s| *s != "?") {
                statements += 1;
                let older = stmt.chars().last().unwrap();
                fact_refs += (((older as u8 - b'a') as usize) < facts) as usize;
            }
        }
        // Lengths spread widely, so one budget bites some problems and spares others.
        assert!(lengths.len() > 30 && lengths.first().unwrap() * 2 < *lengths.last().unwrap(), "{lengths:?}");
        let share = fact_refs as f64 / statements as f64;
        assert!((0.35..0.6).contains(&share), "share of older operands that are facts: {share}");
        // Another seed, another set.
        assert_ne!(questions(&ChainParams { seed: 2, ..p })[0], a[0]);
    }

    #[test]
    fn addition_only_keeps_the_programs_and_changes_only_the_operations() {
        let (mixed, plus) = (params(), ChainParams { ops: "+".into(), ..params() });
        for i in 0..20 {
            let (m, p) = (problem(&mixed, i), problem(&plus, i));
            assert_eq!(m.question.replace('-', "+"), p.question);
            assert!(!p.thinking.contains('-'));
            assert_eq!(solve(&p.question), p.answer);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(ChainParams { facts: [6, 8], steps: [10, 20], ..params() }.validate().is_err());
        assert!(ChainParams { fact_ref: 1.5, ..params() }.validate().is_err());
        assert!(ChainParams { ops: "*".into(), ..params() }.validate().is_err());
        assert!(params().validate().is_ok());
    }
}
