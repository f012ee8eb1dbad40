//! The look shared by the figures: colours, sizes in points, and axes with their ticks.

use anyhow::Result;

use super::canvas::{measure, pt, HAlign, Rgb, Scene, TextStyle, VAlign};

/// The proposed method.
pub(super) const RED: Rgb = Rgb(0xE6, 0x39, 0x46);
/// The full cache.
pub(super) const NAVY: Rgb = Rgb(0x2B, 0x2D, 0x42);
/// Every other policy's bar.
pub(super) const LIGHT: Rgb = Rgb(0xE0, 0xE0, 0xE0);
/// Dodger blue: the KV cache length.
pub(super) const BLUE: Rgb = Rgb(0x1E, 0x90, 0xFF);
/// Spines and ticks.
pub(super) const INK: Rgb = Rgb(0x33, 0x33, 0x33);
pub(super) const LEGEND_PATCH: Rgb = Rgb(0x80, 0x80, 0x80);
pub(super) const GRID: Rgb = Rgb(0xE6, 0xE6, 0xE6);
/// Line colours of the other policies in the budget figure (matplotlib's tab10, red left out).
pub(super) const PALETTE: [Rgb; 8] = [
    Rgb(0x1F, 0x77, 0xB4),
    Rgb(0xFF, 0x7F, 0x0E),
    Rgb(0x2C, 0xA0, 0x2C),
    Rgb(0x94, 0x67, 0xBD),
    Rgb(0x8C, 0x56, 0x4B),
    Rgb(0xE3, 0x77, 0xC2),
    Rgb(0xBC, 0xBD, 0x22),
    Rgb(0x17, 0xBE, 0xCF),
];

/// Sizes in points.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) tick: f64,
    pub(super) value: f64,
    pub(super) axis_title: f64,
    pub(super) title: f64,
    pub(super) legend: f64,
    pub(super) spine: f64,
    pub(super) tick_len: f64,
    pub(super) tick_width: f64,
    pub(super) edge: f64,
    pub(super) line: f64,
    pub(super) marker: f64,
}

/// A full-page figure.
pub(super) const LARGE: Sizes = Sizes {
    tick: 16.0,
    value: 13.0,
    axis_title: 17.0,
    title: 17.0,
    legend: 15.0,
    spine: 1.25,
    tick_len: 4.0,
    tick_width: 1.1,
    edge: 0.8,
    line: 2.5,
    marker: 8.5,
};

/// A panel among several.
pub(super) const SMALL: Sizes = Sizes {
    tick: 11.0,
    value: 9.5,
    axis_title: 12.0,
    title: 13.0,
    legend: 11.0,
    spine: 1.0,
    tick_len: 3.0,
    tick_width: 0.9,
    edge: 0.6,
    line: 2.0,
    marker: 6.5,
};

/// The lowest top of an accuracy axis, in %.
pub(super) const MIN_ACCURACY_TOP: f64 = 10.0;

/// A tick step of 1, 2, 2.5 or 5 × 10ⁿ giving about `target` intervals up to `hi`, and the axis top
/// (a multiple of the step at or above `hi`).
pub(super) fn nice_axis(hi: f64, target: usize) -> (f64, f64) {
    let hi = if hi.is_finite() && hi > 0.0 { hi } else { 1.0 };
    let raw = hi / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * mag);
    ((hi / step - 1e-9).ceil() * step, step)
}

pub(super) fn ticks(top: f64, step: f64) -> Vec<f64> {
    let n = (top / step).round() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Decimals that show every multiple of `step` exactly.
pub(super) fn decimals(step: f64) -> usize {
    (0..4).find(|&d| ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() < 1e-6).unwrap_or(4)
}

pub(super) fn fmt_tick(v: f64, step: f64) -> String {
    format!("{v:.*}", decimals(step))
}

/// KV cache lengths: "0", "5k", "2.5k" on axes reaching 2k tokens, plain counts below.
pub(super) fn fmt_kv(v: f64, step: f64, top: f64) -> String {
    if top < 2000.0 {
        return fmt_tick(v, step);
    }
    if v == 0.0 {
        return "0".into();
    }
    format!("{:.*}k", decimals(step / 1000.0), v / 1000.0)
}

/// Data to pixels along one axis.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) p0: f64,
    pub(super) p1: f64,
}

impl Scale {
    pub(super) fn at(&self, v: f64) -> f64 {
        self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)
    }
}

/// The plot rectangle.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rect {
    pub(super) x0: f64,
    pub(super) y0: f64,
    pub(super) x1: f64,
    pub(super) y1: f64,
}

pub(super) fn hline(s: &mut Scene, x0: f64, x1: f64, y: f64, width: f64, color: Rgb) {
    s.rect(x0, y - width / 2.0, x1, y + width / 2.0, color);
}

pub(super) fn vline(s: &mut Scene, x: f64, y0: f64, y1: f64, width: f64, color: Rgb) {
    s.rect(x - width / 2.0, y0, x + width / 2.0, y1, color);
}

/// Space taken by a title turned by 90° beside an axis: cap height plus descenders.
pub(super) fn turned_title_width(style: &TextStyle) -> Result<f64> {
    Ok(measure("A", style)?.1 + 0.25 * style.size)
}

/// Left spine, ticks and labels of `scale` at `plot.x0`, with the axis title turned beside them at
/// `title_x` (its left edge).
pub(super) fn left_axis(
    s: &mut Scene,
    plot: Rect,
    scale: Scale,
    step: f64,
    sz: Sizes,
    title: Option<(&str, f64)>,
) -> Result<()> {
    let tick = TextStyle::new(sz.tick);
    let (tl, tw) = (pt(sz.tick_len), pt(sz.tick_width));
    for v in ticks(scale.hi, step) {
        let y = scale.at(v);
        hline(s, plot.x0 - tl, plot.x0, y, tw, INK);
        s.text(&fmt_tick(v, step), (plot.x0 - tl - pt(3.5), y), tick, HAlign::Right, VAlign::Center, 0.0)?;
    }
    let sw = pt(sz.spine);
    vline(s, plot.x0, plot.y0, plot.y1 + sw / 2.0, sw, INK);
    if let Some((text, x)) = title {
        let style = TextStyle::new(sz.axis_title).bold(true);
        s.text(text, (x, (plot.y0 + plot.y1) / 2.0), style, HAlign::Left, VAlign::Center, 90.0)?;
    }
    Ok(())
}

/// The widest of the texts, in pixels.
pub(super) fn max_width<S: AsRef<str>>(texts: impl IntoIterator<Item = (S, TextStyle)>) -> Result<f64> {
    texts.into_iter().try_fold(0.0f64, |widest, (t, style)| Ok(widest.max(measure(t.as_ref(), &style)?.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(63.6 * 1.1, 7), (70.0, 10.0));
        assert_eq!(nice_axis(17300.0 / 0.9, 6), (20000.0, 5000.0));
        assert_eq!(nice_axis(0.0, 7), (1.0, 0.2));
        assert_eq!(fmt_kv(2500.0, 2500.0, 10000.0), "2.5k");
        assert_eq!(fmt_kv(5000.0, 5000.0, 20000.0), "5k");
        assert_eq!(fmt_kv(300.0, 100.0, 600.0), "300");
        assert_eq!(fmt_tick(0.5, 0.25), "0.50");
    }
}
