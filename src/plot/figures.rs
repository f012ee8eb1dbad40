//! The layouts of the three figures, in the look of the DynTS summary figure: DejaVu Serif, left
//! and bottom spines (and right, for a second axis), outward ticks, no grid on bar charts.

use anyhow::Result;

use super::canvas::{measure, pt, HAlign, Marker, Rgb, Scene, TextStyle, VAlign};
use super::layout::*;
use super::{fmt_tokens, mean_of, BudgetChoice, PlotOptions, PolicyLabel, Row};

/// What every figure draws from.
pub struct Data<'a> {
    pub rows: &'a [Row],
    pub policies: &'a [PolicyLabel],
    /// The rows of the summary and per-dataset figures.
    pub budget: BudgetChoice,
    pub opts: &'a PlotOptions,
}

impl Data<'_> {
    /// Rows at the chosen budget, the full cache (budget 0) included.
    fn at_budget(&self, r: &Row) -> bool {
        match self.budget {
            BudgetChoice::One(b) => r.budget == 0 || r.budget == b,
            BudgetChoice::PerDataset | BudgetChoice::FullOnly => true,
        }
    }

    fn is_highlight(&self, policy: &str) -> bool {
        policy == self.opts.highlight
    }
}

/// The canvas of the summary and budget figures: 9 × 5.4 in.
const PAGE: (u32, u32) = (1800, 1080);

fn bar_fill(d: &Data, policy: &str) -> Rgb {
    if d.is_highlight(policy) {
        RED
    } else if policy == "full" {
        NAVY
    } else {
        LIGHT
    }
}

/// One bar of a bar chart; NaN values (a policy without results for a dataset) leave the slot empty.
struct Bar {
    label: String,
    value: f64,
    /// Mean peak KV cache length (the summary's second axis).
    kv: f64,
    fill: Rgb,
    bold: bool,
}

/// A bar chart in `frame`: value labels over the bars, policy labels under them (turned when they
/// would collide), and with `kv` the KV cache length as a dashed line on a right axis.
struct BarChart<'a> {
    bars: &'a [Bar],
    kv: bool,
    y_title: Option<&'a str>,
    /// Keep the y title's room even without one, so that panels side by side align.
    y_title_room: bool,
    /// The largest value the axis must hold (shared by aligned panels); default the bars' largest.
    vmax: Option<f64>,
    title: Option<&'a str>,
    sz: Sizes,
}

impl BarChart<'_> {
    /// Draws the chart; returns the plot rectangle.
    fn draw(&self, s: &mut Scene, frame: Rect) -> Result<Rect> {
        let sz = self.sz;
        let n = self.bars.len().max(1) as f64;
        let (pad, tl) = (pt(3.5), pt(sz.tick_len));
        let tick = TextStyle::new(sz.tick);
        let (_, cap) = measure("0", &tick)?;
        let axis_title = TextStyle::new(sz.axis_title).bold(true);
        let title_style = TextStyle::new(sz.title).bold(true);

        // Accuracy axes reach at least 10 %, so a run of zeros still reads as percentages.
        let vmax = self.vmax.unwrap_or_else(|| self.bars.iter().map(|b| b.value).fold(MIN_ACCURACY_TOP, f64::max));
        let (ytop, ystep) = nice_axis(vmax * 1.1, 7);
        let ylabels = ticks(ytop, ystep).into_iter().map(|v| fmt_tick(v, ystep)).collect::<Vec<_>>();
        let ylab_w = max_width(ylabels.iter().map(|t| (t, tick)))?;
        let title_w = turned_title_width(&axis_title)?;
        let mut left = pt(2.0) + ylab_w + pad + tl;
        if self.y_title.is_some() || self.y_title_room {
            left += title_w + pad;
        }

        let kmax = self.bars.iter().map(|b| b.kv).fold(0.0, f64::max);
        let (ktop0, kstep) = nice_axis(kmax / 0.9, 6);
        // The KV axis may be raised (see `kv_top_clear_of_labels`): room for its widest labels.
        let kv_labels = |top: f64| ticks(top, kstep).into_iter().map(|v| fmt_kv(v, kstep, top)).collect::<Vec<_>>();
        let right = if self.kv {
            let widest = kv_top_candidates(ktop0, kstep)
                .map(|top| max_width(kv_labels(top).iter().map(|t| (t, tick))))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .fold(0.0, f64::max);
            tl + pad + widest + pad + title_w + pt(2.0)
        } else {
            pt(6.0)
        };

        let mut top = cap / 2.0 + pt(2.0);
        if self.title.is_some() {
            top += measure("A", &title_style)?.1 + 0.3 * title_style.size + pt(6.0);
        }

        // Tick labels: level when they fit their slot, else turned just enough for neighbours to
        // clear each other (25° at least, in 5° steps), right-aligned under their tick.
        let styles: Vec<TextStyle> = self.bars.iter().map(|b| tick.bold(b.bold)).collect();
        let widths: Vec<f64> =
            self.bars.iter().zip(&styles).map(|(b, st)| measure(&b.label, st).map(|m| m.0)).collect::<Result<_>>()?;
        let slot_for = |left: f64| (frame.x1 - frame.x0 - left - right) / (n + 0.4);
        let slot = slot_for(left);
        let widest = widths.iter().copied().fold(0.0, f64::max);
        let angle: f64 = if widest + pt(6.0) <= slot {
            0.0
        } else {
            let needed = 1.25 * tick.size;
            let a = (needed / slot).min(1.0).asin().to_degrees().max(25.0);
            ((a / 5.0).ceil() * 5.0).min(90.0)
        };
        let (sin, cos) = (angle.to_radians().sin(), angle.to_radians().cos());
        let turned_h = |w: f64| w * sin + cap * cos;
        let turned_w = |w: f64| w * cos + cap * sin;
        let label_h = widths.iter().map(|&w| turned_h(w)).fold(0.0, f64::max);
        // The first label reaches left of its tick; widen the left margin if it would leave the frame.
        if angle > 0.0 {
            if let Some(&w0) = widths.first() {
                let reach = turned_w(w0) + pt(2.0);
                let k = 0.7 / (n + 0.4);
                let need = (reach - k * (frame.x1 - frame.x0 - right)) / (1.0 - k);
                left = left.max(need);
            }
        }
        let bottom = tl + pad + label_h + 0.25 * tick.size + pt(2.0);
        let plot = Rect { x0: frame.x0 + left, y0: frame.y0 + top, x1: frame.x1 - right, y1: frame.y1 - bottom };
        let slot = (plot.x1 - plot.x0) / (n + 0.4);
        let cx = |i: usize| plot.x0 + (0.7 + i as f64) * slot;
        let y = Scale { lo: 0.0, hi: ytop, p0: plot.y1, p1: plot.y0 };

        if let Some(t) = self.title {
            s.text(t, ((plot.x0 + plot.x1) / 2.0, frame.y0 + pt(2.0)), title_style, HAlign::Center, VAlign::Top, 0.0)?;
        }
        if self.bars.is_empty() {
            let note = TextStyle::new(sz.value).color(INK);
            s.text(
                "no results",
                ((plot.x0 + plot.x1) / 2.0, (plot.y0 + plot.y1) / 2.0),
                note,
                HAlign::Center,
                VAlign::Center,
                0.0,
            )?;
        }
        let bw = 0.65 * slot;
        // Value labels shrink to their slot when crowded.
        let value_w =
            max_width(self.bars.iter().map(|b| (format!("{:.1}", b.value), TextStyle::new(sz.value).bold(true))))?;
        let value_pt = if value_w > 0.95 * slot { (sz.value * 0.95 * slot / value_w).max(5.0) } else { sz.value };
        for (i, bar) in self.bars.iter().enumerate().filter(|(_, b)| b.value.is_finite()) {
            let x = cx(i);
            let (x0, x1) = (x - bw / 2.0, x + bw / 2.0);
            s.edged_rect((x0, y.at(bar.value)), (x1, y.at(0.0)), bar.fill, Rgb::BLACK, pt(sz.edge));
            let style = TextStyle::new(value_pt).bold(bar.bold);
            s.text(
                &format!("{:.1}", bar.value),
                (x, y.at(bar.value) - pt(4.0)),
                style,
                HAlign::Center,
                VAlign::Bottom,
                0.0,
            )?;
        }
        let title_x = frame.x0 + pt(2.0);
        left_axis(s, plot, y, ystep, sz, self.y_title.map(|t| (t, title_x)))?;
        let sw = pt(sz.spine);
        hline(s, plot.x0 - sw / 2.0, plot.x1 + sw / 2.0, plot.y1, sw, INK);
        let tw = pt(sz.tick_width);
        for (i, (bar, style)) in self.bars.iter().zip(&styles).enumerate() {
            let x = cx(i);
            vline(s, x, plot.y1, plot.y1 + tl, tw, INK);
            let (ha, a) = if angle > 0.0 { (HAlign::Right, angle) } else { (HAlign::Center, 0.0) };
            s.text(&bar.label, (x, plot.y1 + tl + pad), *style, ha, VAlign::Top, a)?;
        }

        if self.kv {
            let plot_h = plot.y1 - plot.y0;
            let label_h = measure("0", &TextStyle::new(value_pt))?.1;
            let spans: Vec<KvSpan> = self
                .bars
                .iter()
                .filter(|b| b.value.is_finite() && b.kv.is_finite())
                .map(|b| {
                    let lo = (y.p0 - y.at(b.value) + pt(4.0)) / plot_h;
                    KvSpan { kv: b.kv, label: (lo, lo + label_h / plot_h) }
                })
                .collect();
            let ktop = kv_top_clear_of_labels(ktop0, kstep, &spans, (pt(sz.marker) / 2.0 + pt(1.5)) / plot_h);
            let klabels = kv_labels(ktop);
            let k = Scale { lo: 0.0, hi: ktop, p0: plot.y1, p1: plot.y0 };
            vline(s, plot.x1, plot.y0, plot.y1 + sw / 2.0, sw, INK);
            let label = TextStyle::new(sz.tick).color(BLUE);
            for (v, text) in ticks(ktop, kstep).into_iter().zip(&klabels) {
                hline(s, plot.x1, plot.x1 + tl, k.at(v), tw, INK);
                s.text(text, (plot.x1 + tl + pad, k.at(v)), label, HAlign::Left, VAlign::Center, 0.0)?;
            }
            let klab_w = max_width(klabels.iter().map(|t| (t, label)))?;
            let title = axis_title.color(BLUE);
            let tx = plot.x1 + tl + pad + klab_w + pad;
            s.text("KV Cache Length", (tx, (plot.y0 + plot.y1) / 2.0), title, HAlign::Left, VAlign::Center, 90.0)?;
            let points: Vec<(f64, f64)> = self
                .bars
                .iter()
                .enumerate()
                .filter(|(_, b)| b.kv.is_finite())
                .map(|(i, b)| (cx(i), k.at(b.kv)))
                .collect();
            let lw = pt(sz.line);
            s.dashed(&points, BLUE, lw, 3.7 * lw, 1.6 * lw);
            for p in points {
                s.marker(Marker::Square, p, pt(sz.marker), BLUE);
            }
        }
        Ok(plot)
    }
}

/// A bar's KV cache length and the vertical extent of its value label, as fractions of the plot's
/// height from its bottom.
struct KvSpan {
    kv: f64,
    label: (f64, f64),
}

/// The KV axis tops tried: the nice top, then a step higher at a time up to twice it.
fn kv_top_candidates(ktop0: f64, kstep: f64) -> impl Iterator<Item = f64> {
    let n = (ktop0 / kstep).round() as usize;
    (0..=n).map(move |j| ktop0 + j as f64 * kstep)
}

/// The lowest KV axis top at which no marker (half its height `half`, a fraction of the plot's)
/// covers its own bar's value label: the full cache's marker tends to sit level with the top of a
/// high bar. `ktop0` when no candidate clears them all.
fn kv_top_clear_of_labels(ktop0: f64, kstep: f64, spans: &[KvSpan], half: f64) -> f64 {
    let clear = |top: f64| {
        spans.iter().all(|s| {
            let at = s.kv / top;
            at + half <= s.label.0 || at - half >= s.label.1
        })
    };
    kv_top_candidates(ktop0, kstep).find(|&top| clear(top)).unwrap_or(ktop0)
}

/// An optional title across the top of a figure; returns the height it takes.
fn figure_title(s: &mut Scene, title: Option<&str>, sz: Sizes) -> Result<f64> {
    let Some(t) = title else { return Ok(pt(4.0)) };
    let style = TextStyle::new(sz.title).bold(true);
    s.text(t, (s.width as f64 / 2.0, pt(8.0)), style, HAlign::Center, VAlign::Top, 0.0)?;
    Ok(pt(8.0) + measure(t, &style)?.1 + 0.3 * style.size + pt(6.0))
}

/// Bars of the policies with results at the chosen budget, means over `rows` (NaN where `rows`
/// have none).
fn bars(d: &Data, rows: &[Row]) -> Vec<Bar> {
    d.policies
        .iter()
        .filter(|p| d.rows.iter().any(|r| r.policy == p.name && d.at_budget(r)))
        .map(|p| Bar {
            label: p.label.clone(),
            value: mean_of(rows, &p.name, |r| d.at_budget(r), |r| r.accuracy).unwrap_or(f64::NAN),
            kv: mean_of(rows, &p.name, |r| d.at_budget(r), |r| r.peak_kv).unwrap_or(f64::NAN),
            fill: bar_fill(d, &p.name),
            bold: d.is_highlight(&p.name),
        })
        .collect()
}

/// The DynTS summary figure: accuracy bars with values, and the KV cache length on a right axis.
pub fn summary(d: &Data) -> Result<Scene> {
    let sz = LARGE;
    let mut s = Scene::new(PAGE.0, PAGE.1);
    let mut y = figure_title(&mut s, d.opts.title.as_deref(), sz)?;

    // Legend: "Accuracy" patch, "KV Cache Length" line, centred on top.
    let style = TextStyle::new(sz.legend);
    let (patch_w, patch_h, sample_w, gap, space) = (pt(22.0), pt(11.0), pt(30.0), pt(8.0), pt(28.0));
    let (acc_w, cap) = measure("Accuracy", &style)?;
    let (kv_w, _) = measure("KV Cache Length", &style)?;
    let total = patch_w + gap + acc_w + space + sample_w + gap + kv_w;
    let mut x = (s.width as f64 - total) / 2.0;
    let cy = y + pt(4.0) + cap / 2.0 + pt(2.0);
    s.edged_rect((x, cy - patch_h / 2.0), (x + patch_w, cy + patch_h / 2.0), LEGEND_PATCH, Rgb::BLACK, pt(1.0));
    x += patch_w + gap;
    s.text("Accuracy", (x, cy), style, HAlign::Left, VAlign::Center, 0.0)?;
    x += acc_w + space;
    let lw = pt(sz.line);
    s.dashed(&[(x, cy), (x + sample_w, cy)], BLUE, lw, 3.7 * lw, 1.6 * lw);
    s.marker(Marker::Square, (x + sample_w / 2.0, cy), pt(sz.marker), BLUE);
    x += sample_w + gap;
    s.text("KV Cache Length", (x, cy), style, HAlign::Left, VAlign::Center, 0.0)?;
    y = cy + cap / 2.0 + pt(10.0);

    let bars = bars(d, d.rows);
    let chart = BarChart {
        bars: &bars,
        kv: true,
        y_title: Some("Accuracy (%)"),
        y_title_room: false,
        vmax: None,
        title: None,
        sz,
    };
    let frame = Rect { x0: pt(4.0), y0: y, x1: s.width as f64 - pt(4.0), y1: s.height as f64 - pt(4.0) };
    chart.draw(&mut s, frame)?;
    Ok(s)
}

/// One panel per dataset at the chosen budget, three to a row, on one accuracy scale.
pub fn by_dataset(d: &Data) -> Result<Scene> {
    let sz = SMALL;
    let mut datasets: Vec<&str> = Vec::new();
    for r in d.rows {
        if !datasets.contains(&r.dataset.as_str()) {
            datasets.push(&r.dataset);
        }
    }
    let n = datasets.len().max(1);
    let cols = match n {
        1..=3 => n,
        4 => 2,
        _ => 3,
    };
    let rows = n.div_ceil(cols);
    let (panel_w, panel_h, margin) = (900.0, 800.0, pt(4.0));
    let title_space = 80.0;
    let width = (cols as f64 * panel_w + 2.0 * margin).round() as u32;
    let height = (title_space + rows as f64 * panel_h + margin).round() as u32;
    let mut s = Scene::new(width, height);
    let default_title = match d.budget {
        BudgetChoice::One(b) => format!("Accuracy per dataset, B = {}", fmt_tokens(b)),
        BudgetChoice::PerDataset | BudgetChoice::FullOnly => "Accuracy per dataset".to_string(),
    };
    let top = figure_title(&mut s, Some(d.opts.title.as_deref().unwrap_or(&default_title)), LARGE)?;
    let row_h = (height as f64 - top - margin) / rows as f64;
    let panels: Vec<Vec<Bar>> = datasets
        .iter()
        .map(|dataset| bars(d, &d.rows.iter().filter(|r| r.dataset == *dataset).cloned().collect::<Vec<_>>()))
        .collect();
    let vmax = panels.iter().flatten().map(|b| b.value).fold(MIN_ACCURACY_TOP, f64::max);
    for (i, (dataset, bars)) in datasets.iter().zip(&panels).enumerate() {
        let (r, c) = (i / cols, i % cols);
        let chart = BarChart {
            bars,
            kv: false,
            y_title: (c == 0).then_some("Accuracy (%)"),
            y_title_room: true,
            vmax: Some(vmax),
            title: Some(dataset),
            sz,
        };
        let x0 = margin + c as f64 * panel_w;
        let y0 = top + r as f64 * row_h;
        chart.draw(&mut s, Rect { x0, y0, x1: x0 + panel_w - pt(6.0), y1: y0 + row_h - pt(6.0) })?;
    }
    Ok(s)
}

/// Accuracy against the budget: a line per evicting policy, the full cache as a dashed reference.
pub fn by_budget(d: &Data) -> Result<Scene> {
    let sz = Sizes { tick: 14.0, axis_title: 15.0, legend: 13.0, line: 2.0, marker: 7.5, ..LARGE };
    let mut s = Scene::new(PAGE.0, PAGE.1);
    let top = figure_title(&mut s, d.opts.title.as_deref(), sz)?;
    let budgets = super::budgets(d.rows);

    struct Series {
        label: String,
        color: Rgb,
        marker: Option<Marker>,
        width: f64,
        bold: bool,
        points: Vec<(usize, f64)>,
        reference: Option<f64>,
    }
    let mut series = Vec::new();
    let mut palette = PALETTE.iter().cycle();
    let mut markers = Marker::ALL.iter().cycle();
    for p in d.policies {
        let highlight = d.is_highlight(&p.name);
        if let Some(acc) = mean_of(d.rows, &p.name, |r| r.budget == 0, |r| r.accuracy) {
            let color = if highlight {
                RED
            } else if p.name == "full" {
                NAVY
            } else {
                *palette.next().unwrap_or(&NAVY)
            };
            series.push(Series {
                label: p.label.clone(),
                color,
                marker: None,
                width: pt(sz.line),
                bold: highlight,
                points: Vec::new(),
                reference: Some(acc),
            });
        }
        let points: Vec<(usize, f64)> = budgets
            .iter()
            .filter_map(|&b| mean_of(d.rows, &p.name, |r| r.budget == b, |r| r.accuracy).map(|a| (b, a)))
            .collect();
        if !points.is_empty() {
            let color = if highlight { RED } else { *palette.next().unwrap_or(&NAVY) };
            series.push(Series {
                label: p.label.clone(),
                color,
                marker: Some(*markers.next().unwrap_or(&Marker::Square)),
                width: pt(if highlight { sz.line * 1.4 } else { sz.line }),
                bold: highlight,
                points,
                reference: None,
            });
        }
    }

    // Legend on the right, one entry a line.
    let legend = TextStyle::new(sz.legend);
    let (sample_w, gap) = (pt(30.0), pt(7.0));
    let label_w = max_width(series.iter().map(|e| (e.label.as_str(), legend.bold(e.bold))))?;
    let legend_w = sample_w + gap + label_w + pt(12.0);

    let tick = TextStyle::new(sz.tick);
    let (_, cap) = measure("0", &tick)?;
    let axis_title = TextStyle::new(sz.axis_title).bold(true);
    let (tl, pad) = (pt(sz.tick_len), pt(3.5));
    let amax =
        series.iter().flat_map(|e| e.points.iter().map(|p| p.1).chain(e.reference)).fold(MIN_ACCURACY_TOP, f64::max);
    let (ytop, ystep) = nice_axis(amax * 1.1, 7);
    let ylab_w = max_width(ticks(ytop, ystep).into_iter().map(|v| (fmt_tick(v, ystep), tick)))?;
    let left = pt(4.0) + turned_title_width(&axis_title)? + pad + ylab_w + pad + tl;
    let (_, title_cap) = measure("A", &axis_title)?;
    let bottom = tl + pad + cap + 0.3 * tick.size + pad + title_cap + 0.3 * axis_title.size + pt(4.0);
    let plot = Rect {
        x0: left,
        y0: top + cap / 2.0 + pt(6.0),
        x1: s.width as f64 - legend_w - pt(16.0),
        y1: s.height as f64 - bottom,
    };
    let y = Scale { lo: 0.0, hi: ytop, p0: plot.y1, p1: plot.y0 };
    // Budgets on a log scale (sweeps are usually geometric), 8 % padding; one budget sits centred.
    let (lmin, lmax) = match (budgets.first(), budgets.last()) {
        (Some(&a), Some(&b)) if a < b => {
            let (a, b) = ((a as f64).ln(), (b as f64).ln());
            (a - 0.08 * (b - a), b + 0.08 * (b - a))
        }
        (Some(&a), _) => ((a as f64).ln() - 1.0, (a as f64).ln() + 1.0),
        _ => (0.0, 1.0),
    };
    let x = Scale { lo: lmin, hi: lmax, p0: plot.x0, p1: plot.x1 };
    let bx = |b: usize| x.at((b as f64).ln());

    let tw = pt(sz.tick_width);
    for v in ticks(ytop, ystep).into_iter().skip(1) {
        hline(&mut s, plot.x0, plot.x1, y.at(v), tw, GRID);
    }
    for e in &series {
        if let Some(acc) = e.reference {
            s.dashed(&[(plot.x0, y.at(acc)), (plot.x1, y.at(acc))], e.color, e.width, 3.7 * e.width, 1.6 * e.width);
        }
    }
    for e in &series {
        let pts: Vec<(f64, f64)> = e.points.iter().map(|&(b, a)| (bx(b), y.at(a))).collect();
        s.line(pts.clone(), e.color, e.width);
        for p in pts {
            s.marker(e.marker.unwrap_or(Marker::Square), p, pt(sz.marker), e.color);
        }
    }
    left_axis(&mut s, plot, y, ystep, sz, Some(("Accuracy (%)", pt(4.0))))?;
    let sw = pt(sz.spine);
    hline(&mut s, plot.x0 - sw / 2.0, plot.x1 + sw / 2.0, plot.y1, sw, INK);
    let mut last_right = f64::MIN;
    for &b in &budgets {
        let px = bx(b);
        vline(&mut s, px, plot.y1, plot.y1 + tl, tw, INK);
        let text = fmt_tokens(b);
        let w = measure(&text, &tick)?.0;
        if px - w / 2.0 > last_right + pt(4.0) {
            s.text(&text, (px, plot.y1 + tl + pad), tick, HAlign::Center, VAlign::Top, 0.0)?;
            last_right = px + w / 2.0;
        }
    }
    let title_y = plot.y1 + tl + pad + cap + 0.3 * tick.size + pad;
    s.text("KV budget B (tokens)", ((plot.x0 + plot.x1) / 2.0, title_y), axis_title, HAlign::Center, VAlign::Top, 0.0)?;

    let mut ly = plot.y0 + pt(4.0);
    let lx = plot.x1 + pt(16.0);
    let (_, lcap) = measure("A", &legend)?;
    for e in &series {
        let cy = ly + lcap / 2.0;
        if e.reference.is_some() {
            s.dashed(&[(lx, cy), (lx + sample_w, cy)], e.color, e.width, 3.7 * e.width, 1.6 * e.width);
        } else {
            s.line(vec![(lx, cy), (lx + sample_w, cy)], e.color, e.width);
            s.marker(e.marker.unwrap_or(Marker::Square), (lx + sample_w / 2.0, cy), pt(sz.marker), e.color);
        }
        s.text(&e.label, (lx + sample_w + gap, cy), legend.bold(e.bold), HAlign::Left, VAlign::Center, 0.0)?;
        ly += 1.7 * legend.size;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_axis_rises_until_no_marker_covers_its_bars_label() {
        // A summary whose full-cache label sat under its marker: 99 % (axis 120) with 352 KV; labels
        // 0.02 above their bar, 0.05 high, markers 0.02 half-high.
        let span = |acc: f64, kv: f64| KvSpan { kv, label: (acc / 120.0 + 0.02, acc / 120.0 + 0.07) };
        let spans = [span(99.0, 352.0), span(70.0, 268.0), span(41.0, 268.0)];
        // At 400 the full cache's marker (0.88) sits on its label (0.845–0.895); at 500 it is
        // inside its bar (0.70), DynTS's (0.536) just under its bar's top (0.583).
        assert_eq!(kv_top_clear_of_labels(400.0, 100.0, &spans, 0.02), 500.0);
        assert_eq!(kv_top_clear_of_labels(400.0, 100.0, &spans[2..], 0.02), 400.0);
        // A marker that no top up to twice the nice one clears leaves the nice one.
        let stuck = [KvSpan { kv: 100.0, label: (0.0, 1.0) }];
        assert_eq!(kv_top_clear_of_labels(400.0, 100.0, &stuck, 0.02), 400.0);
        assert_eq!(kv_top_candidates(400.0, 100.0).collect::<Vec<_>>(), [400.0, 500.0, 600.0, 700.0, 800.0]);
    }
}
