//! The eviction budget of the DynTS harness: trigger at `budget` (B) cached tokens per layer, keep
//! the last `window` (W) tokens, and keep ⌊`ratio` (r) · (L − W)⌋ of the older ones.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// B: the peak number of cached tokens per layer (prompt and window included).
    pub budget: usize,
    /// W: the most recent tokens, always kept (`kept_window` in the DynTS code).
    pub window: usize,
    /// r: the fraction of the older part kept at each eviction.
    pub ratio: f64,
}

impl Budget {
    /// No budget: what the full cache runs under. B lies far above any cache, yet sums on it
    /// cannot overflow.
    pub const UNBOUNDED: Budget = Budget { budget: usize::MAX / 4, window: 0, ratio: 1.0 };

    /// The (B, W, r) columns of result files: the full cache (no budget) reads (0, 0, 1).
    pub fn columns(budget: Option<&Budget>) -> (usize, usize, f64) {
        budget.map_or((0, 0, 1.0), |b| (b.budget, b.window, b.ratio))
    }

    /// From the `--budget`, `--window` and `--ratio` flags' text, validated.
    pub fn from_flags(budget: &str, window: &str, ratio: f64) -> Result<Self> {
        let b = Budget {
            budget: parse_tokens(budget).context("--budget")?,
            window: parse_tokens(window).context("--window")?,
            ratio,
        };
        b.validate()?;
        Ok(b)
    }

    pub fn validate(&self) -> Result<()> {
        if self.budget == 0 {
            bail!("--budget must be positive");
        }
        if self.window >= self.budget {
            bail!("--window ({}) must be smaller than --budget ({})", self.window, self.budget);
        }
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            bail!("--ratio must be in (0, 1], got {}", self.ratio);
        }
        Ok(())
    }

    /// Slots kept of the older part at an eviction from `len` tokens: ⌊r · (len − W)⌋.
    pub fn kept_older(&self, len: usize) -> usize {
        (self.ratio * len.saturating_sub(self.window) as f64).floor() as usize
    }

    /// Cache size right after an eviction that fires at B + 1 tokens.
    pub fn post_eviction_len(&self) -> usize {
        self.window + self.kept_older(self.budget + 1)
    }
}

/// Parses a token count: `5000`, `5k`, `4.5k` (k = 1000). Rejects anything else by name.
pub fn parse_tokens(text: &str) -> Result<usize> {
    let t = text.trim();
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1000.0),
        None => (t, 1.0),
    };
    let value: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && !num.is_empty() && !num.starts_with(['+', '-']))
        .with_context(|| format!("'{text}' is not a token count (examples: 5000, 5k, 4.5k)"))?;
    let tokens = value * mult;
    if tokens.fract() != 0.0 {
        bail!("'{text}' is not a whole number of tokens");
    }
    Ok(tokens as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_parse() {
        assert_eq!(parse_tokens("5000").unwrap(), 5000);
        assert_eq!(parse_tokens("5k").unwrap(), 5000);
        assert_eq!(parse_tokens("4.5k").unwrap(), 4500);
        assert_eq!(parse_tokens("256").unwrap(), 256);
        for bad in ["5kk", "k", "", "-5", "4.5", "1.2345k", "5m", "nan", "inf"] {
            assert!(parse_tokens(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_tokens("5kk").unwrap_err().to_string().contains("5kk"));
    }

    #[test]
    fn budgets_validate() {
        let ok = Budget { budget: 5000, window: 2000, ratio: 0.3 };
        ok.validate().unwrap();
        assert_eq!(ok.post_eviction_len(), 2900);
        assert_eq!(Budget { budget: 5000, window: 2000, ratio: 0.4 }.post_eviction_len(), 3200);
        assert!(Budget { window: 5000, ..ok }.validate().unwrap_err().to_string().contains("--window"));
        assert!(Budget { ratio: 0.0, ..ok }.validate().is_err());
        assert!(Budget { ratio: 1.5, ..ok }.validate().is_err());
    }
}
