//! Funnels as text tables with character bars.

use dropscope_core::result::StepResult;

/// A table: step, count, conversion from first (with interval), from
/// previous, dropped, median time, and a bar.
pub fn funnel_table(steps: &[StepResult]) -> String {
    let mut out = String::new();
    let width = steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 28);
    out.push_str(&format!(
        "{:<3} {:<width$} {:>9} {:>16} {:>8} {:>9} {:>10}  bar\n",
        "#", "step", "count", "from first (95%)", "from prev", "dropped", "median"
    ));
    for s in steps {
        let bar_len = (s.conversion_from_first * 30.0).round() as usize;
        let median = s
            .median_conversion_time
            .map(human_secs)
            .unwrap_or_else(|| "-".into());
        let name: String = s.name.chars().take(width).collect();
        out.push_str(&format!(
            "{:<3} {:<width$} {:>9} {:>6.1}% ±{:>4.1}   {:>7.1}% {:>9} {:>10}  {}\n",
            s.order + 1,
            name,
            s.count,
            s.conversion_from_first * 100.0,
            (s.conversion_from_first_interval[1] - s.conversion_from_first_interval[0]) * 50.0,
            s.conversion_from_previous * 100.0,
            s.dropped,
            median,
            "█".repeat(bar_len)
        ));
    }
    out
}

fn human_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.1}m", s / 60.0)
    } else if s < 86400.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86400.0)
    }
}
