//! SVG plots of a scored series: the values against the expected band, and the score below.
//!
//! Text is written as SVG `<text>` in the generic `sans-serif` family and laid out with plotters'
//! built-in width estimate (its `ttf` and `ab_glyph` features are off), so drawing a plot reads no
//! font file at build or run time: whatever views the SVG supplies the font.
//!
//! A series can hold millions of samples but the picture has about a thousand pixel columns, so
//! every line is reduced to the lowest and highest sample of each column before it is drawn:
//! the picture is the same, the file stays small.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::{RangedCoordf64, RangedCoordi64};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use portent_core::Scored;

/// The picture's size in pixels.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 800;
/// Room above the panels for the title and the legend.
const HEADER: u32 = 72;
/// The values' share of the panels' height; the score gets the rest.
const TOP_SHARE: f64 = 0.7;
/// Room left of both panels for the y labels; the same for both so their x axes line up.
const Y_LABEL_AREA: u32 = 84;
const X_LABEL_AREA: u32 = 52;
const RIGHT_MARGIN: u32 = 28;
/// A generic family every SVG viewer resolves to some font it has.
const FONT: &str = "sans-serif";

/// Consecutive samples further apart than this many median steps leave a gap in the lines.
const GAP_STEPS: i64 = 5;
/// Anomalous samples closer than this many median steps belong to one interval…
const MERGE_STEPS: i64 = 10;
/// …as do those closer than this many pixels, which would touch on screen anyway.
const MERGE_PX: f64 = 4.0;
/// The y axis reaches at most this many central ranges (0.1% to 99.9% quantile) beyond that
/// range, so that one absurd value does not flatten the rest; values beyond are drawn at the edge.
const OUTLIER_RANGES: f64 = 2.0;
/// At most this many labelled instants on the time axis.
const MAX_TIME_TICKS: usize = 9;

const VALUE: RGBColor = RGBColor(31, 100, 170);
const EXPECTED: RGBColor = RGBColor(90, 110, 125);
const ANOMALY: RGBColor = RGBColor(214, 39, 40);
const SCORE: RGBColor = RGBColor(125, 80, 170);
const INK: RGBColor = RGBColor(40, 40, 40);
const MUTED: RGBColor = RGBColor(110, 110, 110);
const GRID: RGBColor = RGBColor(228, 228, 228);
const BORDER: RGBColor = RGBColor(170, 170, 170);

/// Draws one scored series to an SVG file a person can read.
///
/// The top panel shows the values, the expected band and line, anomalous samples (score at or
/// above `threshold`) in red and the anomalous intervals shaded; the bottom panel shows the score
/// and the threshold. Times are UTC. NaN and infinite numbers leave gaps rather than failing.
pub(crate) fn write_svg(
    path: &Path,
    title: &str,
    scored: &[Scored],
    threshold: f64,
) -> anyhow::Result<()> {
    let svg =
        render(title, scored, threshold).with_context(|| format!("plot {}", path.display()))?;
    std::fs::write(path, svg).with_context(|| format!("write plot {}", path.display()))
}

/// The SVG document for `scored`.
fn render(title: &str, scored: &[Scored], threshold: f64) -> anyhow::Result<String> {
    if scored.is_empty() {
        bail!("no samples to plot");
    }
    let scored: Cow<'_, [Scored]> = if scored.is_sorted_by_key(|s| s.t) {
        Cow::Borrowed(scored)
    } else {
        let mut sorted = scored.to_vec();
        sorted.sort_by_key(|s| s.t);
        Cow::Owned(sorted)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, title, &scored, threshold)?;
        root.present()?;
    }
    Ok(svg)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    scored: &[Scored],
    threshold: f64,
) -> anyhow::Result<()> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let top_height = (f64::from(HEIGHT - HEADER) * TOP_SHARE).round() as u32;
    let (top, bottom) = body.split_vertically(top_height);

    let (t0, t1) = time_span(scored);
    let ticks = time_ticks(t0, t1, MAX_TIME_TICKS);
    let y = y_range(scored);
    let mut values = ChartBuilder::on(&top)
        .margin_top(6)
        .margin_bottom(10)
        .margin_left(6)
        .margin_right(RIGHT_MARGIN)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d((t0..t1).with_key_points(ticks.at.clone()), y.lo..y.hi)?;
    let columns = values.plotting_area().get_pixel_range().0.len();
    let frame = Frame::new(scored, threshold, t0, t1, columns.max(1));

    draw_values(root, &mut values, &frame, &y)?;
    draw_scores(root, &bottom, &frame, &ticks)?;

    let heading = format!(
        "{title} — {} anomalous interval{}",
        frame.intervals.len(),
        plural(frame.intervals.len())
    );
    let left = values.plotting_area().get_pixel_range().0.start;
    header.draw(&Text::new(
        heading,
        (left, 12),
        (FONT, 24, FontStyle::Bold).into_font().color(&INK),
    ))?;
    legend(&header, left, 50, threshold)
}

/// What both panels share: the samples, the time axis' pixel columns and the anomalies.
struct Frame<'a> {
    scored: &'a [Scored],
    threshold: f64,
    t0: i64,
    t1: i64,
    grid: Grid,
    /// First and last anomalous sample of each group of them.
    intervals: Vec<(i64, i64)>,
    /// How far an interval's shading reaches beyond its samples, so a lone one shows.
    pad: i64,
}

impl<'a> Frame<'a> {
    fn new(scored: &'a [Scored], threshold: f64, t0: i64, t1: i64, columns: usize) -> Self {
        let grid = Grid::new(scored, t0, t1, columns);
        let merge = (MERGE_STEPS.saturating_mul(grid.step)).max(grid.ms_per_px(MERGE_PX));
        Self {
            scored,
            threshold,
            t0,
            t1,
            intervals: anomalous_intervals(scored, threshold, merge),
            pad: (grid.step / 2).max(grid.ms_per_px(1.5)),
            grid,
        }
    }

    /// The anomalous intervals as rectangles from `lo` to `hi` on a panel's y axis.
    fn shading(
        &self,
        lo: f64,
        hi: f64,
        style: ShapeStyle,
    ) -> impl Iterator<Item = Rectangle<(i64, f64)>> + '_ {
        self.intervals.iter().map(move |&(a, b)| {
            let from = a.saturating_sub(self.pad).max(self.t0);
            let to = b.saturating_add(self.pad).min(self.t1);
            Rectangle::new([(from, lo), (to, hi)], style)
        })
    }

    /// The line through `pick` of each sample, in pieces, reduced per pixel column.
    fn line(&self, pick: impl Fn(&Scored) -> Option<f64>) -> Vec<Vec<(i64, f64)>> {
        reduce::<MinMax>(self.scored, &self.grid, pick)
    }
}

/// The top panel: anomalous intervals, expected band and line, the values, anomalous samples.
fn draw_values(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &mut ChartContext<'_, SVGBackend<'_>, TimeValue>,
    frame: &Frame<'_>,
    y: &YRange,
) -> anyhow::Result<()> {
    let y_step = (y.hi - y.lo) / 20.0;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(BORDER)
        .y_labels(8)
        .y_label_style(label_style())
        .y_label_formatter(&|v| format_number(*v, y_step))
        .y_desc("value")
        .axis_desc_style(desc_style())
        .draw()?;
    let (px, py) = chart.plotting_area().get_pixel_range();

    chart.draw_series(frame.shading(y.lo, y.hi, ANOMALY.mix(0.12).filled()))?;
    // A darker strip along the top edge, so that short intervals on a long plot stand out.
    let strip = (y.hi - y.lo) / py.len().max(1) as f64 * 5.0;
    chart.draw_series(frame.shading(y.hi - strip, y.hi, ANOMALY.mix(0.6).filled()))?;

    let band = reduce::<Envelope>(frame.scored, &frame.grid, |s| {
        (s.yhat_lower.is_finite() && s.yhat_upper.is_finite())
            .then(|| (y.clamp(s.yhat_lower), y.clamp(s.yhat_upper)))
    });
    chart.draw_series(band.iter().filter(|p| p.len() > 1).map(|piece| {
        let upper = piece.iter().map(|&(t, _, hi)| (t, hi));
        let lower = piece.iter().rev().map(|&(t, lo, _)| (t, lo));
        Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            EXPECTED.mix(0.22).filled(),
        )
    }))?;
    let yhat = frame.line(|s| finite(s.yhat).map(|v| y.clamp(v)));
    draw_pieces(chart, &yhat, EXPECTED.mix(0.9).stroke_width(1))?;
    let value = frame.line(|s| finite(s.value).map(|v| y.clamp(v)));
    draw_pieces(chart, &value, VALUE.stroke_width(1))?;
    // The extremes of each column's anomalous samples: the rest lie on the line between them.
    let marked = frame.line(|s| {
        (s.score.get() >= frame.threshold)
            .then_some(s.value)
            .and_then(finite)
            .map(|v| y.clamp(v))
    });
    chart.draw_series(
        marked
            .iter()
            .flatten()
            .map(|&p| Circle::new(p, 3, ANOMALY.filled())),
    )?;

    if y.clipped > 0 {
        let note = format!(
            "{} value{} beyond the axis, drawn at its edge",
            y.clipped,
            plural(y.clipped)
        );
        root.draw(&Text::new(
            note,
            (px.end - 8, py.start + 8),
            label_style()
                .color(&MUTED)
                .pos(Pos::new(HPos::Right, VPos::Top)),
        ))?;
    }
    draw_border(root, &px, &py)
}

/// The bottom panel: the score over time against the threshold, with the time axis.
fn draw_scores(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    frame: &Frame<'_>,
    ticks: &TimeTicks,
) -> anyhow::Result<()> {
    const TOP: f64 = 1.05;
    let mut chart = ChartBuilder::on(area)
        .margin_top(4)
        .margin_bottom(4)
        .margin_left(6)
        .margin_right(RIGHT_MARGIN)
        .y_label_area_size(Y_LABEL_AREA)
        .x_label_area_size(X_LABEL_AREA)
        .build_cartesian_2d(
            (frame.t0..frame.t1).with_key_points(ticks.at.clone()),
            0.0..TOP,
        )?;
    let x_desc = format!(
        "time (UTC), {} to {}",
        format_time(frame.t0, "%Y-%m-%d %H:%M"),
        format_time(frame.t1, "%Y-%m-%d %H:%M")
    );
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(BORDER)
        .y_labels(3)
        .x_label_style(label_style())
        .y_label_style(label_style())
        .x_label_formatter(&|t| format_time(*t, ticks.format))
        .y_label_formatter(&|v| format_number(*v, 0.1))
        .x_desc(x_desc)
        .y_desc("score")
        .axis_desc_style(desc_style())
        .draw()?;

    chart.draw_series(frame.shading(0.0, TOP, ANOMALY.mix(0.12).filled()))?;
    for piece in frame.line(|s| Some(s.score.get())) {
        chart.draw_series(
            AreaSeries::new(piece, 0.0, SCORE.mix(0.18).filled())
                .border_style(SCORE.stroke_width(1)),
        )?;
    }
    let threshold = frame.threshold;
    if (0.0..=TOP).contains(&threshold) {
        chart.draw_series(DashedLineSeries::new(
            [(frame.t0, threshold), (frame.t1, threshold)],
            6,
            4,
            ANOMALY.mix(0.85).stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("threshold {threshold:.2}"),
            (frame.t1, threshold),
            label_style()
                .color(&ANOMALY)
                .pos(Pos::new(HPos::Right, VPos::Bottom)),
        )))?;
    }
    let (px, py) = chart.plotting_area().get_pixel_range();
    draw_border(root, &px, &py)
}

fn label_style() -> TextStyle<'static> {
    (FONT, 15).into_font().color(&INK)
}

fn desc_style() -> TextStyle<'static> {
    (FONT, 16).into_font().color(&MUTED)
}

/// Draws each piece of a broken line; a piece of one point, between two gaps, as a dot.
fn draw_pieces(
    chart: &mut ChartContext<'_, SVGBackend<'_>, TimeValue>,
    pieces: &[Vec<(i64, f64)>],
    style: ShapeStyle,
) -> anyhow::Result<()> {
    for piece in pieces {
        if let [p] = piece.as_slice() {
            chart.draw_series(std::iter::once(Circle::new(*p, 2, style.filled())))?;
        } else {
            chart.draw_series(LineSeries::new(piece.iter().copied(), style))?;
        }
    }
    Ok(())
}

/// The coordinates of both panels: milliseconds since the epoch against a number.
type TimeValue = Cartesian2d<WithKeyPoints<RangedCoordi64>, RangedCoordf64>;

/// A thin border around a panel's plotting area.
fn draw_border(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    px: &std::ops::Range<i32>,
    py: &std::ops::Range<i32>,
) -> anyhow::Result<()> {
    root.draw(&Rectangle::new(
        [(px.start, py.start), (px.end, py.end)],
        BORDER.stroke_width(1),
    ))?;
    Ok(())
}

/// The key to the colours, in one row starting at `(x, y)`.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    mut x: i32,
    y: i32,
    threshold: f64,
) -> anyhow::Result<()> {
    enum Key {
        Line(RGBAColor),
        Dashed(RGBAColor),
        Fill(RGBAColor),
        Dot(RGBAColor),
    }
    let entries = [
        (Key::Line(VALUE.to_rgba()), "value".to_owned()),
        (Key::Line(EXPECTED.mix(0.9)), "expected".to_owned()),
        (Key::Fill(EXPECTED.mix(0.22)), "expected band".to_owned()),
        (
            Key::Dot(ANOMALY.to_rgba()),
            format!("anomalous (score ≥ {threshold:.2})"),
        ),
        (
            Key::Fill(ANOMALY.mix(0.12)),
            "anomalous interval".to_owned(),
        ),
        (Key::Fill(SCORE.mix(0.35)), "anomaly score".to_owned()),
        (Key::Dashed(ANOMALY.mix(0.85)), "threshold".to_owned()),
    ];
    let style = (FONT, 15).into_font().color(&INK);
    for (key, label) in entries {
        match key {
            Key::Line(c) => {
                area.draw(&PathElement::new([(x, y), (x + 22, y)], c.stroke_width(2)))?;
            }
            Key::Dashed(c) => {
                area.draw(&PathElement::new([(x, y), (x + 8, y)], c.stroke_width(2)))?;
                area.draw(&PathElement::new(
                    [(x + 14, y), (x + 22, y)],
                    c.stroke_width(2),
                ))?;
            }
            Key::Fill(c) => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 22, y + 6)], c.filled()))?;
            }
            Key::Dot(c) => area.draw(&Circle::new((x + 11, y), 4, c.filled()))?,
        }
        let width = text_width(&label, 15.0);
        area.draw(&Text::new(
            label,
            (x + 28, y),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += 28 + width + 22;
    }
    Ok(())
}

/// Roughly how wide `text` is at plotters font size `size`: a typical sans-serif glyph is about
/// 0.55 em, and plotters writes `font-size` as `size / 1.24`. Plotters' own estimate counts
/// bytes, which overshoots for text such as `≥`.
fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size / 1.24 * 0.55).ceil() as i32
}

/// The time axis' extent: first to last sample, widened when there is only one instant.
fn time_span(scored: &[Scored]) -> (i64, i64) {
    let first = scored.first().map_or(0, |s| s.t.millis());
    let last = scored.last().map_or(0, |s| s.t.millis());
    if last > first {
        (first, last)
    } else {
        (
            first.saturating_sub(30 * MINUTE),
            last.saturating_add(30 * MINUTE),
        )
    }
}

/// Maps times to the plot's pixel columns, and knows the series' usual step.
struct Grid {
    t0: i64,
    span: i64,
    columns: usize,
    /// The median spacing of samples; one millisecond if there is none.
    step: i64,
    /// Samples further apart than this are not joined by a line.
    gap: i64,
}

impl Grid {
    fn new(scored: &[Scored], t0: i64, t1: i64, columns: usize) -> Self {
        let mut steps: Vec<i64> = scored
            .windows(2)
            .map(|w| w[1].t.millis_since(w[0].t))
            .filter(|&d| d > 0)
            .collect();
        let step = if steps.is_empty() {
            1
        } else {
            let mid = steps.len() / 2;
            *steps.select_nth_unstable(mid).1
        };
        Self {
            t0,
            span: t1.saturating_sub(t0).max(1),
            columns,
            step,
            gap: step.saturating_mul(GAP_STEPS),
        }
    }

    fn column(&self, t: i64) -> usize {
        let x = t.saturating_sub(self.t0) as f64 / self.span as f64 * self.columns as f64;
        (x.max(0.0) as usize).min(self.columns - 1)
    }

    /// How many milliseconds `px` pixels stand for.
    fn ms_per_px(&self, px: f64) -> i64 {
        (self.span as f64 / self.columns as f64 * px).ceil() as i64
    }
}

/// What of one pixel column's samples is worth drawing.
trait Reduce {
    type In: Copy;
    type Out;
    fn start(t: i64, x: Self::In) -> Self;
    fn add(&mut self, t: i64, x: Self::In);
    fn emit(self, out: &mut Vec<Self::Out>);
}

/// The lowest and the highest value, in time order: a line through them covers the column
/// exactly as the full line would.
struct MinMax {
    min: (i64, f64),
    max: (i64, f64),
}

impl Reduce for MinMax {
    type In = f64;
    type Out = (i64, f64);
    fn start(t: i64, v: f64) -> Self {
        Self {
            min: (t, v),
            max: (t, v),
        }
    }
    fn add(&mut self, t: i64, v: f64) {
        if v < self.min.1 {
            self.min = (t, v);
        }
        if v > self.max.1 {
            self.max = (t, v);
        }
    }
    fn emit(self, out: &mut Vec<(i64, f64)>) {
        let (a, b) = if self.min.0 <= self.max.0 {
            (self.min, self.max)
        } else {
            (self.max, self.min)
        };
        out.push(a);
        if b != a {
            out.push(b);
        }
    }
}

/// The widest band: lowest lower edge and highest upper edge.
struct Envelope {
    t: i64,
    lo: f64,
    hi: f64,
}

impl Reduce for Envelope {
    type In = (f64, f64);
    type Out = (i64, f64, f64);
    fn start(t: i64, (lo, hi): (f64, f64)) -> Self {
        Self { t, lo, hi }
    }
    fn add(&mut self, _: i64, (lo, hi): (f64, f64)) {
        self.lo = self.lo.min(lo);
        self.hi = self.hi.max(hi);
    }
    fn emit(self, out: &mut Vec<(i64, f64, f64)>) {
        out.push((self.t, self.lo, self.hi));
    }
}

/// The pieces of a line through `pick` of each sample, reduced per pixel column.
///
/// A sample `pick` refuses (a NaN), or a gap in time, ends a piece; but not inside one column,
/// where the break could not be seen: that bounds the output by the number of columns.
fn reduce<R: Reduce>(
    scored: &[Scored],
    grid: &Grid,
    pick: impl Fn(&Scored) -> Option<R::In>,
) -> Vec<Vec<R::Out>> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut column: Option<(usize, R)> = None;
    let mut broken = false;
    let mut prev: Option<i64> = None;
    for s in scored {
        let t = s.t.millis();
        if prev.is_some_and(|p| t.saturating_sub(p) > grid.gap) {
            broken = true;
        }
        prev = Some(t);
        let Some(x) = pick(s) else {
            broken = true;
            continue;
        };
        let c = grid.column(t);
        if let Some((at, r)) = column.as_mut()
            && *at == c
        {
            r.add(t, x);
        } else {
            if let Some((_, r)) = column.take() {
                r.emit(&mut piece);
            }
            if broken && !piece.is_empty() {
                pieces.push(std::mem::take(&mut piece));
            }
            column = Some((c, R::start(t, x)));
        }
        broken = false;
    }
    if let Some((_, r)) = column {
        r.emit(&mut piece);
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// The spans from first to last anomalous sample of each group of anomalous samples less than
/// `merge` milliseconds apart.
fn anomalous_intervals(scored: &[Scored], threshold: f64, merge: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in scored.iter().filter(|s| s.score.get() >= threshold) {
        let t = s.t.millis();
        match out.last_mut() {
            Some(last) if t.saturating_sub(last.1) <= merge => last.1 = t,
            _ => out.push((t, t)),
        }
    }
    out
}

/// The value axis' extent, and how many values lie beyond it.
struct YRange {
    lo: f64,
    hi: f64,
    clipped: usize,
}

impl YRange {
    fn clamp(&self, v: f64) -> f64 {
        v.clamp(self.lo, self.hi)
    }
}

/// An axis that shows every finite value and band edge, unless a few are so far out that
/// showing them would flatten everything else.
fn y_range(scored: &[Scored]) -> YRange {
    // The central range comes from a sample of the values and band edges: the band belongs in
    // the picture, and a few hundred thousand numbers pin quantiles down well enough for an axis.
    let every = (scored.len() / 100_000).max(1);
    let mut central: Vec<f64> = scored
        .iter()
        .step_by(every)
        .flat_map(|s| [s.value, s.yhat_lower, s.yhat_upper])
        .filter(|v| v.is_finite())
        .collect();
    if central.is_empty() {
        return YRange {
            lo: 0.0,
            hi: 1.0,
            clipped: 0,
        };
    }
    let q_lo = quantile(&mut central, 0.001);
    let q_hi = quantile(&mut central, 0.999);
    let reach = (q_hi - q_lo).max(q_hi.abs().max(q_lo.abs()) * 0.05);
    let (limit_lo, limit_hi) = (q_lo - OUTLIER_RANGES * reach, q_hi + OUTLIER_RANGES * reach);
    let (mut lo, mut hi) = (q_lo, q_hi);
    let mut clipped = 0;
    for s in scored {
        if s.value.is_finite() && !(limit_lo..=limit_hi).contains(&s.value) {
            clipped += 1;
        }
        for v in [s.value, s.yhat_lower, s.yhat, s.yhat_upper] {
            if v.is_finite() {
                lo = lo.min(v.max(limit_lo));
                hi = hi.max(v.min(limit_hi));
            }
        }
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        // A flat line: centre it in a modest range.
        let half = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        (lo, hi) = (lo - half, hi + half);
    }
    let margin = (hi - lo) * 0.05;
    YRange {
        lo: lo - margin,
        hi: hi + margin,
        clipped,
    }
}

/// The `q` quantile of `values` (nearest rank), reordering them.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    *values.select_nth_unstable_by(i, f64::total_cmp).1
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A tick label for `v` on an axis whose labels are about `step` apart: no more digits than the
/// step needs, and large magnitudes with SI prefixes.
fn format_number(v: f64, step: f64) -> String {
    let step = step.abs();
    let magnitude = v.abs().max(step);
    let (scale, suffix) = match magnitude {
        m if m >= 1e12 => (1e12, "T"),
        m if m >= 1e9 => (1e9, "G"),
        m if m >= 1e6 => (1e6, "M"),
        _ => (1.0, ""),
    };
    if magnitude > 0.0 && magnitude < 1e-3 {
        return format!("{v:.1e}");
    }
    let scaled_step = step / scale;
    let decimals = if scaled_step > 0.0 {
        (-scaled_step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    let mut s = format!("{:.*}", decimals, v / scale);
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    if s == "-0" {
        s = "0".to_owned();
    }
    s.push_str(suffix);
    s
}

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 1970-01-05, the first Monday of the epoch: weekly ticks fall on Mondays.
const FIRST_MONDAY: i64 = 4 * DAY;

/// Labelled instants on the time axis, and how to write them.
struct TimeTicks {
    at: Vec<i64>,
    format: &'static str,
}

/// Round UTC instants between `t0` and `t1`, at most about `max` of them, at a step a person
/// would pick: minutes, hours, midnights, Mondays, first days of months or of years.
fn time_ticks(t0: i64, t1: i64, max: usize) -> TimeTicks {
    const FIXED: [i64; 21] = [
        SECOND,
        2 * SECOND,
        5 * SECOND,
        10 * SECOND,
        15 * SECOND,
        30 * SECOND,
        MINUTE,
        2 * MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        2 * HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        2 * DAY,
        7 * DAY,
        14 * DAY,
    ];
    let span = t1.saturating_sub(t0);
    if let Some(&step) = FIXED.iter().find(|&&s| span / s < max as i64) {
        let offset = if step >= 7 * DAY { FIRST_MONDAY } else { 0 };
        let first = t0
            .saturating_sub(offset)
            .div_euclid(step)
            .saturating_mul(step)
            .saturating_add(offset);
        let first = if first < t0 {
            first.saturating_add(step)
        } else {
            first
        };
        let at: Vec<i64> = std::iter::successors(Some(first), |&t| t.checked_add(step))
            .take_while(|&t| t <= t1)
            .collect();
        let format = if step < MINUTE {
            "%H:%M:%S"
        } else if step < DAY {
            let same_day = t0.div_euclid(DAY) == t1.div_euclid(DAY);
            if same_day { "%H:%M" } else { "%m-%d %H:%M" }
        } else {
            "%Y-%m-%d"
        };
        return TimeTicks { at, format };
    }
    // Calendar steps: months have no fixed length, so count them.
    let month_ms = 30 * DAY + 10 * HOUR;
    let months = span / month_ms + 1;
    let every = [1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200]
        .into_iter()
        .find(|&n| months / n < max as i64)
        .unwrap_or(1200);
    let (mut year, mut month) = civil_month(t0);
    let mut at = Vec::new();
    while let Some(t) = month_start(year, month) {
        if t > t1 {
            break;
        }
        let aligned = if every < 12 {
            i64::from(month - 1) % every == 0
        } else {
            month == 1 && i64::from(year) % (every / 12) == 0
        };
        if t >= t0 && aligned {
            at.push(t);
        }
        (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
    }
    let format = if every >= 12 { "%Y" } else { "%Y-%m" };
    TimeTicks { at, format }
}

/// The UTC year and month of `t`.
fn civil_month(t: i64) -> (i16, i8) {
    jiff::Timestamp::from_millisecond(t).map_or((1970, 1), |ts| {
        let date = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        (date.year(), date.month())
    })
}

/// Milliseconds at the first instant of a UTC month, if jiff can represent it.
fn month_start(year: i16, month: i8) -> Option<i64> {
    let date = jiff::civil::Date::new(year, month, 1).ok()?;
    let zoned = date.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// `t` in UTC per a `strftime` format.
fn format_time(t: i64, format: &str) -> String {
    jiff::Timestamp::from_millisecond(t)
        .map(|ts| ts.strftime(format).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use portent_core::{Reason, Score, Timestamp};

    use super::*;

    /// splitmix64: a seeded, dependency-free source of noise for test series.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A standard normal draw (Box–Muller).
        fn normal(&mut self) -> f64 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
        }
    }

    /// A crude score: how many spreads `value` is from `yhat`, squashed into [0, 1].
    fn scored(t: i64, value: f64, yhat: f64, spread: f64) -> Scored {
        let z = ((value - yhat) / spread).abs();
        let score = if z.is_finite() {
            Score::saturating(1.0 - (-z * z / 18.0).exp())
        } else {
            Score::ZERO
        };
        Scored {
            t: Timestamp::from_millis(t),
            value,
            score,
            yhat,
            yhat_lower: yhat - 3.0 * spread,
            yhat_upper: yhat + 3.0 * spread,
            reason: (score >= Score::ALERT).then_some(Reason::Spike),
        }
    }

    /// Four days of a daily cycle plus noise at 5-minute steps, as a model would score it: no
    /// expectation for the first 12 hours, a two-sample spike on day 2, an hour of NaN and a
    /// 3-hour hole on day 3, and a 6-hour level shift on day 4.
    fn synthetic() -> Vec<Scored> {
        const START: i64 = 1_709_510_400_000; // 2024-03-04T00:00Z
        let step = 5 * MINUTE;
        let mut noise = Noise(42);
        let mut out = Vec::new();
        for i in 0..(4 * 288) {
            let t = START + i * step;
            let day = (t - START) as f64 / DAY as f64;
            if (2.6..2.725).contains(&day) {
                continue; // the exporter was down: no samples at all
            }
            let expected = 50.0 + 20.0 * (std::f64::consts::TAU * (day - 0.25)).sin();
            let mut value = expected + 2.0 * noise.normal();
            if i == 432 || i == 433 {
                value += 40.0;
            }
            if (3.25..3.5).contains(&day) {
                value += 25.0;
            }
            if (2.2..2.24).contains(&day) || i % 97 == 0 {
                value = f64::NAN;
            }
            let yhat = if day < 0.5 { f64::NAN } else { expected };
            out.push(scored(t, value, yhat, 2.0));
        }
        out
    }

    /// Where to write pictures: `PORTENT_PLOT_DIR` to keep them and look, else a temp dir.
    fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
        match std::env::var_os("PORTENT_PLOT_DIR") {
            Some(dir) => (None, PathBuf::from(dir)),
            None => {
                let tmp = tempfile::tempdir().expect("temp dir");
                let path = tmp.path().to_owned();
                (Some(tmp), path)
            }
        }
    }

    #[test]
    fn synthetic_series_plots_with_title_legend_and_intervals() {
        let (_tmp, dir) = out_dir();
        let path = dir.join("synthetic.svg");
        write_svg(&path, "node_load1{instance=\"a\"}", &synthetic(), 0.8).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read back");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("node_load1{instance=&quot;a&quot;} — 2 anomalous intervals"));
        assert!(svg.contains("expected band") && svg.contains("threshold 0.80"));
        assert!(svg.contains("03-05 00:00"), "day ticks at midnight UTC");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
    }

    #[test]
    fn two_million_points_stay_small() {
        let mut noise = Noise(7);
        let n = 2_000_000;
        let series: Vec<Scored> = (0..n)
            .map(|i| {
                let t = 1_700_000_000_000 + i * 15_000;
                let yhat = 100.0 + 30.0 * (i as f64 / 5760.0 * std::f64::consts::TAU).sin();
                let spike = if i % 250_000 == 0 { 80.0 } else { 0.0 };
                scored(t, yhat + 3.0 * noise.normal() + spike, yhat, 3.0)
            })
            .collect();
        let (_tmp, dir) = out_dir();
        let path = dir.join("two-million.svg");
        let started = Instant::now();
        write_svg(&path, "two million samples", &series, 0.8).expect("plot");
        let took = started.elapsed();
        let size = std::fs::metadata(&path).expect("written").len();
        eprintln!("2M points: {size} bytes in {took:?}");
        assert!(size < 1_000_000, "{size} bytes");
    }

    #[test]
    fn missing_and_degenerate_series_still_plot() {
        let (_tmp, dir) = out_dir();
        let t = Timestamp::from_secs(1_700_000_000);
        let cases: [(&str, Vec<Scored>); 4] = [
            (
                "extreme-times",
                vec![
                    Scored::unknown(Timestamp::from_millis(i64::MIN), 1.0),
                    Scored::unknown(Timestamp::from_millis(i64::MAX), 2.0),
                ],
            ),
            ("one", vec![Scored::unknown(t, 3.0)]),
            (
                "all-nan",
                (0..50)
                    .map(|i| Scored::unknown(t.add_millis(i * 60_000), f64::NAN))
                    .collect(),
            ),
            (
                "flat",
                (0..50)
                    .map(|i| {
                        let v = if i == 10 { f64::INFINITY } else { 7.0 };
                        scored(t.millis() + i * 60_000, v, 7.0, 0.5)
                    })
                    .collect(),
            ),
        ];
        for (name, series) in cases {
            let path = dir.join(format!("{name}.svg"));
            write_svg(&path, name, &series, 0.8).expect(name);
            let svg = std::fs::read_to_string(&path).expect("read back");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{name}");
        }
    }

    #[test]
    fn one_huge_outlier_does_not_flatten_the_rest() {
        let mut series = synthetic();
        series[600].value = 1e12;
        let y = y_range(&series);
        assert!(y.hi < 500.0, "{}", y.hi);
        assert_eq!(y.clipped, 1);
        let (_tmp, dir) = out_dir();
        let path = dir.join("outlier.svg");
        write_svg(&path, "one absurd value", &series, 0.8).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read back");
        assert!(svg.contains("1 value beyond the axis"));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.svg");
        let err = write_svg(&empty, "x", &[], 0.8).expect_err("empty series");
        assert_eq!(
            format!("{err:#}"),
            format!("plot {}: no samples to plot", empty.display())
        );
        let nowhere = dir.path().join("no/such/dir/x.svg");
        let one = [Scored::unknown(Timestamp::from_secs(0), 1.0)];
        let err = write_svg(&nowhere, "x", &one, 0.8).expect_err("missing directory");
        assert!(format!("{err:#}").starts_with(&format!("write plot {}: ", nowhere.display())));
    }

    #[test]
    fn lines_keep_each_columns_extremes_and_break_at_nan_and_gaps() {
        // 100 samples 10 ms apart over 10 columns, so 10 samples a column; values rise with time.
        let mut series: Vec<Scored> = (0..100)
            .filter(|i| !(70..80).contains(i)) // column 7 is a hole in time
            .map(|i| Scored::unknown(Timestamp::from_millis(i * 10), i as f64))
            .collect();
        series[15].value = f64::NAN; // inside column 1: no visible break
        for s in &mut series[38..=42] {
            s.value = f64::NAN; // from column 3 into column 4: a break
        }
        series[52].value = -100.0;
        series[55].value = 100.0;
        let grid = Grid::new(&series, 0, 990, 10);
        assert_eq!((grid.step, grid.gap), (10, 50));
        let pieces = reduce::<MinMax>(&series, &grid, |s| finite(s.value));
        let expected: [&[(i64, f64)]; 3] = [
            &[
                (0, 0.0),
                (90, 9.0),
                (100, 10.0),
                (190, 19.0),
                (200, 20.0),
                (290, 29.0),
            ]
            .into_iter()
            .chain([(300, 30.0), (370, 37.0)])
            .collect::<Vec<_>>(),
            &[
                (430, 43.0),
                (490, 49.0),
                (520, -100.0),
                (550, 100.0),
                (600, 60.0),
                (690, 69.0),
            ],
            &[(800, 80.0), (890, 89.0), (900, 90.0), (990, 99.0)],
        ];
        assert_eq!(pieces, expected);
    }

    #[test]
    fn time_ticks_fall_on_round_utc_instants() {
        let day = 1_709_510_400_000; // 2024-03-04T00:00Z, a Monday
        let four_days = time_ticks(day + 7 * MINUTE, day + 4 * DAY, MAX_TIME_TICKS);
        let labels: Vec<String> = four_days
            .at
            .iter()
            .map(|&t| format_time(t, four_days.format))
            .collect();
        assert_eq!(
            labels,
            [
                "03-04 12:00",
                "03-05 00:00",
                "03-05 12:00",
                "03-06 00:00",
                "03-06 12:00"
            ]
            .into_iter()
            .chain(["03-07 00:00", "03-07 12:00", "03-08 00:00"])
            .collect::<Vec<_>>()
        );
        let hour = time_ticks(day + 3 * MINUTE, day + HOUR, MAX_TIME_TICKS);
        assert_eq!(format_time(hour.at[0], hour.format), "00:10");
        let weeks = time_ticks(day + HOUR, day + 60 * DAY, MAX_TIME_TICKS);
        assert_eq!(format_time(weeks.at[0], weeks.format), "2024-03-11");
        let year = time_ticks(day, day + 365 * DAY, MAX_TIME_TICKS);
        let labels: Vec<String> = year
            .at
            .iter()
            .map(|&t| format_time(t, year.format))
            .collect();
        assert_eq!(labels[..2], ["2024-05", "2024-07"]);
        let decade = time_ticks(day, day + 3650 * DAY, MAX_TIME_TICKS);
        assert_eq!(format_time(decade.at[0], decade.format), "2026");
    }

    #[test]
    fn numbers_get_as_many_digits_as_their_axis_needs() {
        assert_eq!(format_number(12.5, 0.5), "12.5");
        assert_eq!(format_number(12.0, 0.5), "12");
        assert_eq!(format_number(-0.0, 0.5), "0");
        assert_eq!(format_number(1_500_000.0, 100_000.0), "1.5M");
        assert_eq!(format_number(2.5e9, 1e8), "2.5G");
        assert_eq!(format_number(0.0002, 0.0001), "2.0e-4");
    }

    /// The NAB machine-temperature file, with a rolling mean ± 3 rolling std as the band: the
    /// look on real data. Needs `PORTENT_NAB_DIR` (the NAB repository's root); skipped without.
    #[test]
    fn nab_machine_temperature_plots() {
        let Some(nab) = std::env::var_os("PORTENT_NAB_DIR") else {
            eprintln!("PORTENT_NAB_DIR not set: skipping the NAB plot");
            return;
        };
        let csv =
            PathBuf::from(nab).join("data/realKnownCause/machine_temperature_system_failure.csv");
        let text = std::fs::read_to_string(&csv).expect("NAB file");
        let points: Vec<(i64, f64)> = text
            .lines()
            .skip(1)
            .map(|line| {
                let (ts, v) = line.split_once(',').expect("timestamp,value");
                let dt: jiff::civil::DateTime = ts.parse().expect("NAB timestamp");
                let t = dt
                    .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                    .expect("UTC")
                    .timestamp()
                    .as_millisecond();
                (t, v.parse().expect("NAB value"))
            })
            .collect();
        assert_eq!(points.len(), 22_695);
        let window = 288; // a day of 5-minute samples
        let series: Vec<Scored> = points
            .iter()
            .enumerate()
            .map(|(i, &(t, v))| {
                if i < window {
                    return Scored::unknown(Timestamp::from_millis(t), v);
                }
                let past = &points[i - window..i];
                let mean = past.iter().map(|p| p.1).sum::<f64>() / window as f64;
                let var = past.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / window as f64;
                scored(t, v, mean, var.sqrt().max(0.5))
            })
            .collect();
        let (_tmp, dir) = out_dir();
        let path = dir.join("nab-machine-temperature.svg");
        write_svg(&path, "machine_temperature_system_failure", &series, 0.8).expect("plot");
        let size = std::fs::metadata(&path).expect("written").len();
        eprintln!("NAB machine temperature: {size} bytes");
        assert!(size < 300_000, "{size} bytes");
    }
}
