//! Charts for the console, drawn server-side as SVG with plotters (no script, no CDN).

use plotters::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::analytics::MrrSeries;

fn amount(s: &str) -> f64 {
    // Display only: the exact figures are in the table beside the chart.
    s.parse::<Decimal>()
        .ok()
        .and_then(|d| d.to_f64())
        .unwrap_or(0.0)
}

/// MRR month by month: a line with one point per month, and the months along the axis. The
/// root `<svg>` carries `data-chart="mrr"`.
pub fn mrr_svg(series: &MrrSeries) -> Result<String, String> {
    let values: Vec<f64> = series.data.iter().map(|m| amount(&m.mrr)).collect();
    let n = values.len();
    let top = values.iter().cloned().fold(0.0_f64, f64::max).max(1.0) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0..n.max(1), 0.0..top)
            .map_err(|e| e.to_string())?;
        let months: Vec<String> = series.data.iter().map(|m| m.month.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&|i| months.get(*i).cloned().unwrap_or_default())
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        let accent = RGBColor(0x4F, 0x46, 0xE5);
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, v)| (i, *v)),
                accent.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Circle::new((i, *v), 4, accent.filled())),
            )
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg.replacen("<svg ", "<svg data-chart=\"mrr\" role=\"img\" ", 1))
}
