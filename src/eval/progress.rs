//! Progress on the terminal: one bar per configuration (dataset × policy × budget), added when it
//! starts and left with its accuracy when it ends, above an overall bar with ETA and tokens/s.
//! Without a terminal, one line per finished configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::plan::{Job, Plan};
use crate::results::record::SampleRecord;

/// The bars of one run.
pub struct Progress {
    multi: indicatif::MultiProgress,
    pub overall: indicatif::ProgressBar,
    configs: Mutex<HashMap<String, ConfigProgress>>,
    tokens: AtomicUsize,
    /// Busy and offered slot-steps of the decode steps so far.
    busy: AtomicUsize,
    offered: AtomicUsize,
    start: std::time::Instant,
}

#[derive(Default)]
struct ConfigProgress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    correct: usize,
}

impl Progress {
    pub fn new(plan: &Plan, todo: &[&Job], skipped: &[&Job], finished: &[SampleRecord]) -> Self {
        let mut configs: HashMap<String, ConfigProgress> = HashMap::new();
        let correct: HashMap<&str, bool> = finished.iter().map(|r| (r.key.as_str(), r.correct)).collect();
        for job in todo {
            configs.entry(job.config(plan)).or_default().total += 1;
        }
        for job in skipped {
            let c = configs.entry(job.config(plan)).or_default();
            c.total += 1;
            c.done += 1;
            c.correct += correct.get(job.key(plan).as_str()).copied().unwrap_or(false) as usize;
        }
        let multi = indicatif::MultiProgress::new();
        let overall = multi.add(indicatif::ProgressBar::new(todo.len() as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} samples  {elapsed} < {eta}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            multi,
            overall,
            configs: Mutex::new(configs),
            tokens: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            offered: AtomicUsize::new(0),
            start: std::time::Instant::now(),
        }
    }

    pub fn started(&self, plan: &Plan, job: &Job) {
        let Ok(mut configs) = self.configs.lock() else { return };
        let c = configs.entry(job.config(plan)).or_default();
        if c.bar.is_none() {
            let bar = self.multi.insert_before(&self.overall, indicatif::ProgressBar::new(c.total as u64));
            bar.set_style(
                indicatif::ProgressStyle::with_template("  {prefix:40} {bar:20} {pos}/{len}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(job.config(plan));
            bar.set_position(c.done as u64);
            c.bar = Some(bar);
        }
    }

    /// One decode step ran with `busy` of a pool's `slots` slots decoding.
    pub fn slots(&self, busy: usize, slots: usize) {
        self.busy.fetch_add(busy, Ordering::Relaxed);
        self.offered.fetch_add(slots, Ordering::Relaxed);
    }

    pub fn finished(&self, plan: &Plan, job: &Job, record: &SampleRecord) {
        let n = self.tokens.fetch_add(record.generated_tokens, Ordering::Relaxed) + record.generated_tokens;
        let rate = n as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let (busy, offered) = (self.busy.load(Ordering::Relaxed), self.offered.load(Ordering::Relaxed));
        let occupancy = 100.0 * busy as f64 / offered.max(1) as f64;
        self.overall.set_message(format!("{rate:.1} tok/s, slots {occupancy:.0} % busy"));
        self.overall.inc(1);
        let Ok(mut configs) = self.configs.lock() else { return };
        let name = job.config(plan);
        let c = configs.entry(name.clone()).or_default();
        c.done += 1;
        c.correct += record.correct as usize;
        let accuracy = format!("{}/{} correct ({:.1} %)", c.correct, c.done, 100.0 * c.correct as f64 / c.done as f64);
        if let Some(bar) = &c.bar {
            bar.inc(1);
            bar.set_message(accuracy.clone());
            if c.done == c.total {
                bar.finish();
            }
        }
        if c.done == c.total && self.overall.is_hidden() {
            eprintln!("done {name}: {accuracy}");
        }
    }
}
