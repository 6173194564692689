//! The training curve as a small self-contained SVG: training loss and the main
//! eval metric against the optimizer step, from `log_history`.

use train_loop::LogEntry;

const W: f64 = 720.0;
const H: f64 = 260.0;
const PAD: f64 = 44.0;

fn series(history: &[LogEntry], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(key)?.as_f64()?)))
        .collect()
}

fn panel(
    out: &mut String,
    top: f64,
    title: &str,
    points: &[(f64, f64)],
    max_step: f64,
    color: &str,
) {
    let h = H - 2.0 * PAD;
    out.push_str(&format!(
        "<text x=\"{PAD}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"13\">{title}</text>\n",
        top + PAD - 10.0
    ));
    out.push_str(&format!(
        "<rect x=\"{PAD}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n",
        top + PAD,
        W - 2.0 * PAD
    ));
    if points.is_empty() {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"12\">no values logged</text>\n",
            W / 2.0 - 40.0,
            top + PAD + h / 2.0
        ));
        return;
    }
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |s: f64| PAD + (W - 2.0 * PAD) * s / max_step.max(1.0);
    let y = |v: f64| top + PAD + h - h * (v - lo) / span;
    let coords: Vec<String> = points
        .iter()
        .map(|&(s, v)| format!("{:.1},{:.1}", x(s), y(v)))
        .collect();
    out.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
        coords.join(" ")
    ));
    for &(s, v) in points {
        out.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n",
            x(s),
            y(v)
        ));
    }
    for (v, label) in [(hi, hi), (lo, lo)] {
        out.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"11\">{label:.3}</text>\n",
            y(v) + 4.0
        ));
    }
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"11\">step {max_step}</text>\n",
        W - PAD - 50.0,
        top + H - PAD + 16.0
    ));
}

/// SVG with two panels: `loss` (training) and `eval_<metric>`.
pub fn training_curves(history: &[LogEntry], metric_key: &str) -> String {
    let max_step = history
        .iter()
        .filter_map(|e| e.get("step")?.as_f64())
        .fold(0.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * H,
        2.0 * H
    );
    panel(
        &mut out,
        0.0,
        "training loss",
        &series(history, "loss"),
        max_step,
        "#1f77b4",
    );
    panel(
        &mut out,
        H,
        metric_key,
        &series(history, metric_key),
        max_step,
        "#d62728",
    );
    out.push_str("</svg>\n");
    out
}

/// One column of the suite figure: a task (and its chosen setting), the task score
/// of each seed, and their median.
pub struct SuiteColumn {
    pub label: String,
    pub seed_scores: Vec<f64>,
    pub median: Option<f64>,
}

/// Task scores (0-100) per task: seeds as points, the median as a bar.
pub fn suite_figure(columns: &[SuiteColumn]) -> String {
    let width = (PAD * 2.0 + 90.0 * columns.len() as f64).max(W / 2.0);
    let h = H - 2.0 * PAD;
    let y = |v: f64| PAD + h - h * v.clamp(0.0, 100.0) / 100.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{H}\" viewBox=\"0 0 {width} {H}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{PAD}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"13\">task score (seeds as points, median as bar)</text>\n",
        PAD - 14.0
    );
    for v in [0.0, 50.0, 100.0] {
        out.push_str(&format!(
            "<line x1=\"{PAD}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"8\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"11\">{v}</text>\n",
            width - PAD,
            y(v),
            y(v),
            y(v) + 4.0
        ));
    }
    for (i, c) in columns.iter().enumerate() {
        let x = PAD + 90.0 * i as f64 + 45.0;
        if let Some(m) = c.median {
            out.push_str(&format!(
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"3\"/>\n",
                x - 20.0,
                x + 20.0,
                y(m),
                y(m)
            ));
        }
        for (k, s) in c.seed_scores.iter().enumerate() {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>\n",
                x - 8.0 + 8.0 * (k % 3) as f64,
                y(*s)
            ));
        }
        out.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\">{}</text>\n",
            H - PAD + 16.0,
            c.label
        ));
    }
    out.push_str("</svg>\n");
    out
}
