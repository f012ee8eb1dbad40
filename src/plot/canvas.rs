//! A figure as a scene of shapes and text in pixel coordinates, drawn through plotters twice: into
//! an RGB buffer by `BitMapBackend` (then encoded as PNG) and into a string by `SVGBackend`.
//!
//! Text is set here, not by plotters, from the embedded DejaVu Serif (Book and Bold): plotters turns
//! text by quarter turns only (the figures' tick labels lean by 25°), and its font backends place
//! glyphs differently in PNG and SVG. Here one layout (advances, kerning, cap height) serves both: the
//! PNG gets anti-aliased glyph outlines, the SVG `<text>` elements at the same baseline points, so
//! the figure reads the same with or without DejaVu Serif installed where it is viewed. Slanted lines
//! and markers are anti-aliased in the PNG the same way. Text is drawn above all shapes.

use std::fmt::Write as _;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, OutlineCurve};
use ab_glyph_rasterizer::{point, Rasterizer};
use anyhow::{anyhow, Context, Result};
use plotters::backend::{BitMapBackend, DrawingBackend, RGBPixel, SVGBackend};
use plotters::style::{Color, RGBAColor, ShapeStyle};

/// Output resolution: sizes are given in points (1/72 in) and drawn at this many pixels per inch.
pub const DPI: f64 = 200.0;

/// Points to pixels.
pub fn pt(points: f64) -> f64 {
    points * DPI / 72.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    pub const BLACK: Rgb = Rgb(0, 0, 0);

    fn style(self, stroke_width: u32) -> ShapeStyle {
        ShapeStyle { color: RGBAColor(self.0, self.1, self.2, 1.0), filled: true, stroke_width }
    }

    fn with_alpha(self, alpha: f64) -> RGBAColor {
        RGBAColor(self.0, self.1, self.2, alpha)
    }

    fn hex(self) -> String {
        format!("#{:02X}{:02X}{:02X}", self.0, self.1, self.2)
    }
}

const REGULAR_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSerif.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSerif-Bold.ttf");
/// What the SVG asks the viewer for.
const SVG_FONT_FAMILY: &str = "DejaVu Serif, Bitstream Vera Serif, serif";

struct Fonts {
    regular: FontRef<'static>,
    bold: FontRef<'static>,
}

/// The embedded fonts, parsed once.
fn fonts() -> Result<&'static Fonts> {
    static FONTS: OnceLock<Result<Fonts, String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let parse = |name: &str, bytes: &'static [u8]| {
                FontRef::try_from_slice(bytes).map_err(|e| format!("embedded font {name}: {e}"))
            };
            Ok(Fonts {
                regular: parse("DejaVuSerif.ttf", REGULAR_TTF)?,
                bold: parse("DejaVuSerif-Bold.ttf", BOLD_TTF)?,
            })
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Horizontal alignment of a text's box on its anchor point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical alignment of a text's box (cap height to baseline; descenders hang below) on its
/// anchor point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VAlign {
    Top,
    Center,
    Bottom,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextStyle {
    /// Em size in pixels.
    pub size: f64,
    pub bold: bool,
    pub color: Rgb,
}

impl TextStyle {
    /// A regular black style of `points` size.
    pub fn new(points: f64) -> Self {
        Self { size: pt(points), bold: false, color: Rgb::BLACK }
    }

    pub fn bold(self, bold: bool) -> Self {
        Self { bold, ..self }
    }

    pub fn color(self, color: Rgb) -> Self {
        Self { color, ..self }
    }
}

/// Width and cap height of `text` in pixels.
pub fn measure(text: &str, style: &TextStyle) -> Result<(f64, f64)> {
    let f = fonts()?;
    let font = if style.bold { &f.bold } else { &f.regular };
    Ok((advance(font, text, style.size), cap_height(font, style.size)))
}

fn units_scale(font: &FontRef<'_>, size: f64) -> f64 {
    size / font.units_per_em().unwrap_or(2048.0) as f64
}

/// Height of the capitals (of "H"); ab_glyph keeps the top of an outline in `bounds.min.y`.
fn cap_height(font: &FontRef<'_>, size: f64) -> f64 {
    let h = font.outline(font.glyph_id('H')).map_or(0.73 * 2048.0, |o| o.bounds.min.y.max(o.bounds.max.y) as f64);
    h * units_scale(font, size)
}

fn advance(font: &FontRef<'_>, text: &str, size: f64) -> f64 {
    let mut x = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            x += font.kern_unscaled(p, id) as f64;
        }
        x += font.h_advance_unscaled(id) as f64;
        prev = Some(id);
    }
    x * units_scale(font, size)
}

#[derive(Debug, Clone)]
struct Text {
    text: String,
    style: TextStyle,
    /// Start of the baseline.
    origin: (f64, f64),
    /// Counter-clockwise, in degrees.
    angle: f64,
    width: f64,
    halign: HAlign,
}

impl Text {
    fn direction(&self) -> (f64, f64) {
        let a = self.angle.to_radians();
        (a.cos(), -a.sin())
    }
}

#[derive(Debug, Clone)]
enum Shape {
    /// Axis-aligned filled rectangle.
    Rect { x0: f64, y0: f64, x1: f64, y1: f64, fill: Rgb },
    /// A polyline of `width` pixels (butt ends, round joins).
    Line { points: Vec<(f64, f64)>, color: Rgb, width: f64 },
    /// A filled polygon.
    Polygon { points: Vec<(f64, f64)>, fill: Rgb },
}

/// Marker shapes, for the line figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Square,
    Circle,
    TriangleUp,
    Diamond,
    TriangleDown,
    Pentagon,
}

impl Marker {
    pub const ALL: [Marker; 6] =
        [Marker::Square, Marker::Circle, Marker::TriangleUp, Marker::Diamond, Marker::TriangleDown, Marker::Pentagon];

    /// The outline of a marker of `size` pixels (side of the square) centred on `c`.
    fn points(self, (cx, cy): (f64, f64), size: f64) -> Vec<(f64, f64)> {
        let r = size / 2.0;
        let regular = |n: usize, r: f64, start_deg: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let a = (start_deg + 360.0 * i as f64 / n as f64).to_radians();
                    (cx + r * a.cos(), cy - r * a.sin())
                })
                .collect()
        };
        match self {
            Marker::Square => vec![(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)],
            Marker::Circle => regular(24, r * 1.1, 0.0),
            Marker::TriangleUp => regular(3, r * 1.3, 90.0),
            Marker::TriangleDown => regular(3, r * 1.3, 270.0),
            Marker::Diamond => regular(4, r * 1.35, 90.0),
            Marker::Pentagon => regular(5, r * 1.2, 90.0),
        }
    }
}

/// A figure: shapes in drawing order, then text.
#[derive(Debug, Clone)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    shapes: Vec<Shape>,
    texts: Vec<Text>,
}

impl Scene {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, shapes: Vec::new(), texts: Vec::new() }
    }

    pub fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, fill: Rgb) {
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let (y0, y1) = (y0.min(y1), y0.max(y1));
        self.shapes.push(Shape::Rect { x0, y0, x1, y1, fill });
    }

    /// A filled rectangle between two corners, with an edge of `edge_width` pixels centred on its
    /// border.
    pub fn edged_rect(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), fill: Rgb, edge: Rgb, edge_width: f64) {
        self.rect(x0, y0, x1, y1, fill);
        let h = edge_width / 2.0;
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let (y0, y1) = (y0.min(y1), y0.max(y1));
        self.rect(x0 - h, y0 - h, x1 + h, y0 + h, edge);
        self.rect(x0 - h, y1 - h, x1 + h, y1 + h, edge);
        self.rect(x0 - h, y0 - h, x0 + h, y1 + h, edge);
        self.rect(x1 - h, y0 - h, x1 + h, y1 + h, edge);
    }

    pub fn line(&mut self, points: Vec<(f64, f64)>, color: Rgb, width: f64) {
        if points.len() >= 2 {
            self.shapes.push(Shape::Line { points, color, width });
        }
    }

    /// A dashed polyline: `on` pixels drawn, `off` skipped, the pattern running on across vertices.
    pub fn dashed(&mut self, points: &[(f64, f64)], color: Rgb, width: f64, on: f64, off: f64) {
        let (mut drawing, mut left) = (true, on);
        let mut current: Vec<(f64, f64)> = points.first().map(|p| vec![*p]).unwrap_or_default();
        for w in points.windows(2) {
            let (mut a, b) = (w[0], w[1]);
            let mut len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            while len > 0.0 {
                let step = left.min(len);
                let t = step / len;
                let p = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
                if drawing {
                    current.push(p);
                }
                a = p;
                len -= step;
                left -= step;
                if left <= 1e-9 {
                    if drawing {
                        self.line(std::mem::take(&mut current), color, width);
                    } else {
                        current = vec![p];
                    }
                    drawing = !drawing;
                    left = if drawing { on } else { off };
                }
            }
        }
        if drawing {
            self.line(current, color, width);
        }
    }

    pub fn marker(&mut self, marker: Marker, center: (f64, f64), size: f64, fill: Rgb) {
        self.shapes.push(Shape::Polygon { points: marker.points(center, size), fill });
    }

    /// Text aligned on `anchor`: its box (cap height to baseline) turned by `angle` degrees
    /// counter-clockwise, then placed so that the box's bounds meet `anchor` as `halign`/`valign`
    /// say (matplotlib's default rotation mode). Returns the turned box's size.
    pub fn text(
        &mut self,
        text: &str,
        anchor: (f64, f64),
        style: TextStyle,
        halign: HAlign,
        valign: VAlign,
        angle: f64,
    ) -> Result<(f64, f64)> {
        let (w, cap) = measure(text, &style)?;
        let a = angle.to_radians();
        let (cos, sin) = (a.cos(), a.sin());
        // Box corners relative to the baseline start, y down, turned.
        let corners =
            [(0.0, 0.0), (w, 0.0), (w, -cap), (0.0, -cap)].map(|(x, y)| (x * cos + y * sin, -x * sin + y * cos));
        let (min_x, max_x) = corners.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(c.0), hi.max(c.0)));
        let (min_y, max_y) = corners.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(c.1), hi.max(c.1)));
        let bx = match halign {
            HAlign::Left => min_x,
            HAlign::Center => (min_x + max_x) / 2.0,
            HAlign::Right => max_x,
        };
        let by = match valign {
            VAlign::Top => min_y,
            VAlign::Center => (min_y + max_y) / 2.0,
            VAlign::Bottom => max_y,
        };
        self.texts.push(Text {
            text: text.to_string(),
            style,
            origin: (anchor.0 - bx, anchor.1 - by),
            angle,
            width: w,
            halign,
        });
        Ok((max_x - min_x, max_y - min_y))
    }

    /// The PNG file: the scene drawn by `BitMapBackend` into an RGB buffer, then encoded.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h) = (self.width, self.height);
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let mut db = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut buf, (w, h))
                .map_err(|e| anyhow!("bitmap backend: {e:?}"))?;
            self.draw_bitmap(&mut db).context("drawing the PNG")?;
            db.present().map_err(draw_err).context("drawing the PNG")?;
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let ppm = (DPI / 0.0254).round() as u32;
        enc.set_pixel_dims(Some(png::PixelDimensions { xppu: ppm, yppu: ppm, unit: png::Unit::Meter }));
        let mut writer = enc.write_header().context("encoding the PNG")?;
        writer.write_image_data(&buf).context("encoding the PNG")?;
        writer.finish().context("encoding the PNG")?;
        Ok(out)
    }

    fn draw_bitmap<DB: DrawingBackend>(&self, db: &mut DB) -> Result<()> {
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x0, y0, x1, y1, fill } => {
                    let (ul, br) = pixel_rect(*x0, *y0, *x1, *y1);
                    db.draw_rect(ul, br, &fill.style(1), true).map_err(draw_err)?;
                }
                Shape::Line { points, color, width } => {
                    let mut polys: Vec<Vec<(f64, f64)>> = Vec::new();
                    for s in points.windows(2) {
                        polys.extend(segment_quad(s[0], s[1], *width));
                    }
                    // Round joins.
                    for p in &points[1..points.len() - 1] {
                        polys.push(Marker::Circle.points(*p, *width / 1.1));
                    }
                    fill_antialiased(db, &polys, *color)?;
                }
                Shape::Polygon { points, fill } => fill_antialiased(db, std::slice::from_ref(points), *fill)?,
            }
        }
        let fonts = fonts()?;
        for t in &self.texts {
            let font = if t.style.bold { &fonts.bold } else { &fonts.regular };
            draw_text_bitmap(db, font, t)?;
        }
        Ok(())
    }

    /// The SVG file: shapes drawn by `SVGBackend`, then the text as `<text>` elements.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let mut db = SVGBackend::with_string(&mut svg, (self.width, self.height));
            self.draw_svg_shapes(&mut db).context("drawing the SVG")?;
            db.present().map_err(draw_err).context("drawing the SVG")?;
        }
        let end = svg.rfind("</svg>").context("SVGBackend wrote no closing tag")?;
        let mut texts = String::new();
        for t in &self.texts {
            let (dx, dy) = t.direction();
            let f = match t.halign {
                HAlign::Left => 0.0,
                HAlign::Center => 0.5,
                HAlign::Right => 1.0,
            };
            let (x, y) = (t.origin.0 + f * t.width * dx, t.origin.1 + f * t.width * dy);
            let anchor = match t.halign {
                HAlign::Left => "start",
                HAlign::Center => "middle",
                HAlign::Right => "end",
            };
            write!(
                texts,
                r#"<text x="{x:.1}" y="{y:.1}" font-family="{SVG_FONT_FAMILY}" font-size="{:.1}" fill="{}" text-anchor="{anchor}""#,
                t.style.size,
                t.style.color.hex()
            )?;
            if t.style.bold {
                texts.push_str(r#" font-weight="bold""#);
            }
            if t.angle != 0.0 {
                write!(texts, r#" transform="rotate({:.1} {x:.1} {y:.1})""#, -t.angle)?;
            }
            writeln!(texts, ">{}</text>", xml_escape(&t.text))?;
        }
        svg.insert_str(end, &texts);
        Ok(svg)
    }

    fn draw_svg_shapes<DB: DrawingBackend>(&self, db: &mut DB) -> Result<()> {
        let ip = |p: &(f64, f64)| (p.0.round() as i32, p.1.round() as i32);
        db.draw_rect((0, 0), (self.width as i32, self.height as i32), &Rgb::WHITE.style(1), true).map_err(draw_err)?;
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x0, y0, x1, y1, fill } => {
                    let (ul, br) = pixel_rect(*x0, *y0, *x1, *y1);
                    db.draw_rect(ul, br, &fill.style(1), true).map_err(draw_err)?;
                }
                Shape::Line { points, color, width } => {
                    db.draw_path(points.iter().map(ip), &color.style(width.round().max(1.0) as u32))
                        .map_err(draw_err)?;
                }
                Shape::Polygon { points, fill } => {
                    db.fill_polygon(points.iter().map(ip), &fill.style(1)).map_err(draw_err)?
                }
            }
        }
        Ok(())
    }
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The rectangle covering a segment of `width` (butt ends), or nothing for a point.
fn segment_quad(a: (f64, f64), b: (f64, f64), width: f64) -> Option<Vec<(f64, f64)>> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1e-9 {
        return None;
    }
    let (nx, ny) = (-dy / len * width / 2.0, dx / len * width / 2.0);
    Some(vec![(a.0 + nx, a.1 + ny), (b.0 + nx, b.1 + ny), (b.0 - nx, b.1 - ny), (a.0 - nx, a.1 - ny)])
}

/// The pixel box in which to rasterise `points`: their bounds, the rows cut to the canvas (the
/// rasteriser skips rows outside its box, not columns); `None` when they miss the canvas.
fn raster_box<'a>(
    points: impl Iterator<Item = &'a (f64, f64)>,
    (width, height): (u32, u32),
) -> Option<(f64, f64, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in points {
        (x0, y0, x1, y1) = (x0.min(p.0), y0.min(p.1), x1.max(p.0), y1.max(p.1));
    }
    let finite = [x0, y0, x1, y1].iter().all(|v| v.is_finite());
    if !finite || x0 > x1 || x1 < 0.0 || y1 < 0.0 || x0 > width as f64 || y0 > height as f64 {
        return None;
    }
    let (bx, by) = (x0.floor(), y0.floor().max(0.0));
    let (w, h) = ((x1.ceil() - bx) as usize + 1, (y1.ceil().min(height as f64) - by) as usize + 1);
    Some((bx, by, w, h))
}

/// Coverage of the union of `polys` in their raster box: (x0, y0, width, height, coverage).
fn coverage(polys: &[Vec<(f64, f64)>], canvas: (u32, u32)) -> Option<(i32, i32, usize, usize, Vec<f32>)> {
    let (bx, by, w, h) = raster_box(polys.iter().flatten(), canvas)?;
    let mut cov = vec![0f32; w * h];
    let mut r = Rasterizer::new(w, h);
    for poly in polys {
        r.clear();
        for i in 0..poly.len() {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            r.draw_line(point((a.0 - bx) as f32, (a.1 - by) as f32), point((b.0 - bx) as f32, (b.1 - by) as f32));
        }
        // Polygons of one shape are unioned: a pixel takes the largest coverage.
        r.for_each_pixel(|i, c| cov[i] = cov[i].max(c.min(1.0)));
    }
    Some((bx as i32, by as i32, w, h, cov))
}

fn blend<DB: DrawingBackend>(
    db: &mut DB,
    (bx, by, w, _h, cov): (i32, i32, usize, usize, Vec<f32>),
    color: Rgb,
) -> Result<()> {
    for (i, c) in cov.into_iter().enumerate() {
        if c > 1.0 / 512.0 {
            db.draw_pixel((bx + (i % w) as i32, by + (i / w) as i32), color.with_alpha(c as f64).to_backend_color())
                .map_err(draw_err)?;
        }
    }
    Ok(())
}

fn fill_antialiased<DB: DrawingBackend>(db: &mut DB, polys: &[Vec<(f64, f64)>], color: Rgb) -> Result<()> {
    match coverage(polys, db.get_size()) {
        Some(c) => blend(db, c, color),
        None => Ok(()),
    }
}

/// Glyph outlines laid along the text's (possibly turned) baseline, rasterised with coverage.
fn draw_text_bitmap<DB: DrawingBackend>(db: &mut DB, font: &FontRef<'_>, t: &Text) -> Result<()> {
    let k = units_scale(font, t.style.size);
    let (dx, dy) = t.direction();
    // Font units (y up) at pen position `pen` to pixels.
    let to_px = |pen: f64, p: &ab_glyph::Point| {
        let (lx, ly) = (pen + p.x as f64 * k, -(p.y as f64) * k);
        // Local y (down) runs along the baseline's normal (-dy, dx).
        (t.origin.0 + lx * dx - ly * dy, t.origin.1 + lx * dy + ly * dx)
    };
    let mut curves: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut pen = 0.0;
    let mut prev = None;
    for c in t.text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            pen += font.kern_unscaled(p, id) as f64 * k;
        }
        if let Some(outline) = font.outline(id) {
            for curve in &outline.curves {
                curves.push(match curve {
                    OutlineCurve::Line(a, b) => vec![to_px(pen, a), to_px(pen, b)],
                    OutlineCurve::Quad(a, b, c) => vec![to_px(pen, a), to_px(pen, b), to_px(pen, c)],
                    OutlineCurve::Cubic(a, b, c, d) => {
                        vec![to_px(pen, a), to_px(pen, b), to_px(pen, c), to_px(pen, d)]
                    }
                });
            }
        }
        pen += font.h_advance_unscaled(id) as f64 * k;
        prev = Some(id);
    }
    // Nothing to draw for blank text or text off the canvas.
    let Some((bx, by, w, h)) = raster_box(curves.iter().flatten(), db.get_size()) else { return Ok(()) };
    let mut r = Rasterizer::new(w, h);
    let q = |p: &(f64, f64)| point((p.0 - bx) as f32, (p.1 - by) as f32);
    for c in &curves {
        match c.as_slice() {
            [a, b] => r.draw_line(q(a), q(b)),
            [a, b, c] => r.draw_quad(q(a), q(b), q(c)),
            [a, b, c, d] => r.draw_cubic(q(a), q(b), q(c), q(d)),
            _ => {}
        }
    }
    let mut cov = vec![0f32; w * h];
    r.for_each_pixel(|i, c| cov[i] = c.min(1.0));
    blend(db, (bx as i32, by as i32, w, h, cov), t.style.color)
}

/// A rectangle's pixel corners, at least one pixel wide and high so thin edges never vanish.
fn pixel_rect(x0: f64, y0: f64, x1: f64, y1: f64) -> ((i32, i32), (i32, i32)) {
    let ul = (x0.round() as i32, y0.round() as i32);
    let br = (x1.round() as i32, y1.round() as i32);
    (ul, (br.0.max(ul.0 + 1), br.1.max(ul.1 + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_alignment_follows_the_turned_box() {
        let mut s = Scene::new(100, 100);
        let style = TextStyle::new(10.0);
        let (w, cap) = measure("Ab", &style).unwrap();
        assert!(w > 0.0 && cap > 0.0);
        s.text("Ab", (50.0, 50.0), style, HAlign::Right, VAlign::Top, 0.0).unwrap();
        let t = &s.texts[0];
        assert!((t.origin.0 - (50.0 - w)).abs() < 1e-9 && (t.origin.1 - (50.0 + cap)).abs() < 1e-9);
        // Turned by 90° (reading upwards) and centred: the baseline runs up through the anchor.
        s.text("Ab", (50.0, 50.0), style, HAlign::Center, VAlign::Center, 90.0).unwrap();
        let t = &s.texts[1];
        assert!((t.origin.0 - (50.0 + cap / 2.0)).abs() < 1e-9, "{:?}", t.origin);
        assert!((t.origin.1 - (50.0 + w / 2.0)).abs() < 1e-9, "{:?}", t.origin);
    }

    #[test]
    fn dashes_alternate_along_the_path() {
        let mut s = Scene::new(100, 100);
        s.dashed(&[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)], Rgb::BLACK, 1.0, 5.0, 2.0);
        // 20 px: dashes at 0–5, 7–12 (round the corner), 14–19; the path ends in a gap.
        let dashes: Vec<&Vec<(f64, f64)>> = s
            .shapes
            .iter()
            .map(|d| match d {
                Shape::Line { points, .. } => points,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            dashes,
            [
                &vec![(0.0, 0.0), (5.0, 0.0)],
                &vec![(7.0, 0.0), (10.0, 0.0), (10.0, 2.0)],
                &vec![(10.0, 4.0), (10.0, 9.0)]
            ]
        );
    }

    #[test]
    fn shapes_and_text_off_the_canvas_are_cut_not_fatal() {
        let mut s = Scene::new(60, 40);
        let style = TextStyle::new(12.0);
        s.text("far <off> & away", (-500.0, -300.0), style, HAlign::Left, VAlign::Top, 25.0).unwrap();
        s.text("half out", (50.0, -2.0), style, HAlign::Left, VAlign::Center, 30.0).unwrap();
        s.text("", (10.0, 10.0), style, HAlign::Left, VAlign::Top, 0.0).unwrap();
        s.line(vec![(-50.0, 20.0), (200.0, 25.0), (30.0, 90.0)], Rgb::BLACK, 3.0);
        s.marker(Marker::Diamond, (59.0, 39.0), 10.0, Rgb(255, 0, 0));
        s.rect(-10.0, -10.0, 5.0, 5.0, Rgb::BLACK);
        let png = s.to_png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = s.to_svg().unwrap();
        assert!(svg.contains(">far &lt;off&gt; &amp; away</text>"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
