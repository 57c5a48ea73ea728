//! Draws a [`Prepared`] plot with plotters: SVG or PNG by the file's
//! extension, power per domain over time with the command's attributed
//! share shaded, the command's start and end marked, and CPU usage below.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::Prepared;

/// Size of the figure in pixels (SVG user units).
pub const SIZE: (u32, u32) = (1200, 800);

/// Where a sans-serif font is looked for (Debian's fonts-dejavu-core first).
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Registers a system font as plotters' "sans-serif", once. Err: what to install.
fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        for path in FONT_PATHS {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
        Err(format!(
            "no font to draw text with (looked for {}); install fonts-dejavu-core",
            FONT_PATHS.join(", ")
        ))
    })
    .clone()
}

/// Time axis unit for a span: seconds, minutes or hours.
fn time_unit(span_s: f64) -> (&'static str, f64) {
    if span_s <= 600.0 {
        ("s", 1.0)
    } else if span_s <= 7_200.0 {
        ("min", 60.0)
    } else {
        ("h", 3600.0)
    }
}

/// The plot with its times in `per` seconds, so that ticks fall on round numbers of the unit.
fn in_unit(plot: &Prepared, per: f64) -> Prepared {
    let scale = |points: &[(f64, f64)]| points.iter().map(|&(x, y)| (x / per, y)).collect();
    let lines = |lines: &[super::data::Line]| {
        lines
            .iter()
            .map(|l| super::data::Line {
                label: l.label.clone(),
                estimated: l.estimated,
                points: scale(&l.points),
            })
            .collect()
    };
    Prepared {
        title: plot.title.clone(),
        power: lines(&plot.power),
        command: lines(&plot.command),
        cpu: scale(&plot.cpu),
        window_s: (
            plot.window_s.0.map(|x| x / per),
            plot.window_s.1.map(|x| x / per),
        ),
        span_s: plot.span_s / per,
    }
}

/// Writes the plot to `path` (`.png`: bitmap; anything else: SVG).
pub fn write(plot: &Prepared, path: &Path) -> Result<(), String> {
    ensure_font()?;
    let png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let result = if png {
        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        draw(&root, plot).and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        draw(&root, plot).and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    result.map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

/// Decimals the tick labels of an axis spanning `range` need to be told
/// apart: plotters puts up to about ten ticks on 1-2-5 steps, so labels
/// show down to the step's first significant digit (a 1.35 W axis: 0.2,
/// 0.4...; a 0.013 W one: 0.002...).
pub(crate) fn decimals_for(range: f64) -> usize {
    if !(range.is_finite() && range > 0.0) {
        return 0;
    }
    let step = range / 10.0;
    (-step.log10().floor()).clamp(0.0, 9.0) as usize
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn color(i: usize) -> RGBColor {
    // Colour-blind-safe (Okabe–Ito) hues, then plotters' palette.
    const OKABE_ITO: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(120, 120, 120),
    ];
    OKABE_ITO.get(i).copied().unwrap_or_else(|| {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    })
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &Prepared) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let title: String = if plot.title.chars().count() > 90 {
        plot.title
            .chars()
            .take(89)
            .chain(std::iter::once('…'))
            .collect()
    } else {
        plot.title.clone()
    };
    let root = root
        .titled(&title, ("sans-serif", 26).into_font().color(&BLACK))
        .map_err(err)?;
    let (upper, lower) = root.split_vertically((68).percent());
    let (unit, per) = time_unit(plot.span_s);
    let plot = &in_unit(plot, per);
    let x_max = plot.span_s;
    let x_desc = format!("Time since start ({unit})");
    let x_decimals = decimals_for(x_max);
    let x_fmt = move |x: &f64| format!("{x:.x_decimals$}");

    // Power panel.
    let y_max = plot
        .power
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.35; // headroom for the legend
    let y_decimals = decimals_for(y_max);
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc.as_str())
        .y_desc("Power (W)")
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(err)?;
    for (i, line) in plot.power.iter().enumerate() {
        let c = color(i);
        if let Some(cmd) = plot.command.iter().find(|l| l.label == line.label) {
            chart
                .draw_series(AreaSeries::new(cmd.points.iter().copied(), 0.0, c.mix(0.3)))
                .map_err(err)?
                .label(format!(
                    "{}: command (attributed)",
                    line.label.trim_end_matches(" (estimated)")
                ))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 22, y + 6)], c.mix(0.3).filled())
                });
        }
        let style = c.stroke_width(2);
        let label = if line.estimated {
            format!(
                "{} (model, not measured)",
                line.label.trim_end_matches(" (estimated)")
            )
        } else {
            line.label.clone()
        };
        if line.estimated {
            chart
                .draw_series(DashedLineSeries::new(
                    line.points.iter().copied(),
                    8,
                    5,
                    style,
                ))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
    }
    let marker = RGBColor(60, 60, 60);
    let pad = x_max * 0.006;
    for (at, text, anchor, dx) in [
        (plot.window_s.0, "command start", HPos::Left, pad),
        (plot.window_s.1, "command end", HPos::Right, -pad),
    ] {
        let Some(x) = at else { continue };
        chart
            .draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, y_max)],
                6,
                4,
                marker.stroke_width(1),
            ))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (x + dx, y_max * 0.985),
                ("sans-serif", 15)
                    .into_font()
                    .color(&marker)
                    .pos(Pos::new(anchor, VPos::Top)),
            )))
            .map_err(err)?;
    }
    if plot.power.is_empty() {
        chart
            .draw_series(std::iter::once(Text::new(
                "no energy measured or estimated",
                (x_max * 0.35, y_max * 0.5),
                ("sans-serif", 20).into_font().color(&marker),
            )))
            .map_err(err)?;
    } else {
        // Above the data (the y range has the headroom), between the window marks.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .margin(14)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(err)?;
    }

    // CPU panel.
    let mut cpu = ChartBuilder::on(&lower)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, 0f64..100f64)
        .map_err(err)?;
    cpu.configure_mesh()
        .x_desc(x_desc.as_str())
        .y_desc("CPU usage, all CPUs (%)")
        .x_label_formatter(&x_fmt)
        .y_labels(6)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(err)?;
    let cpu_color = RGBColor(60, 60, 60);
    cpu.draw_series(LineSeries::new(
        plot.cpu.iter().copied(),
        cpu_color.stroke_width(2),
    ))
    .map_err(err)?;
    for at in [plot.window_s.0, plot.window_s.1].into_iter().flatten() {
        cpu.draw_series(DashedLineSeries::new(
            [(at, 0.0), (at, 100.0)],
            6,
            4,
            marker.stroke_width(1),
        ))
        .map_err(err)?;
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decimals_for;

    /// The ticks plotters would draw: 1-2-5 steps, at most ten over the range.
    fn ticks(range: f64) -> Vec<f64> {
        let mut step = 10f64.powf((range / 10.0).log10().floor());
        for factor in [1.0, 2.0, 5.0, 10.0] {
            if range / (step * factor) <= 10.0 {
                step *= factor;
                break;
            }
        }
        (0..=((range / step).floor() as usize))
            .map(|i| i as f64 * step)
            .collect()
    }

    #[test]
    fn tick_labels_carry_the_decimals_their_range_needs() {
        for range in [0.0135, 0.27, 1.35, 2.0, 5.0, 9.9, 13.5, 120.0, 4000.0] {
            let d = decimals_for(range);
            let labels: Vec<String> = ticks(range).iter().map(|t| format!("{t:.d$}")).collect();
            let mut distinct = labels.clone();
            distinct.dedup();
            assert_eq!(distinct, labels, "range {range}: {labels:?}");
            assert!(labels.len() >= 3, "range {range}: {labels:?}");
        }
        // the short command's power axis, once labelled 1 1 1 1 0 0 0
        assert_eq!(decimals_for(1.35), 1);
        assert_eq!(decimals_for(135.0), 0);
        assert_eq!(decimals_for(f64::NAN), 0);
    }
}
