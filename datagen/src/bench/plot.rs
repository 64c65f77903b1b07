//! The benchmark's two plots, as SVG: latency over the run (per slice of send time, its p50,
//! p99 and max, so a plot of 100,000 orders stays a few hundred points) and the latency
//! histogram.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::latency::{percentile, Sample};

/// Slices of send time on the time plot.
const SLICES: usize = 200;
/// Bars of the histogram.
const BINS: usize = 60;

/// Writes `latency-over-time.svg` and `latency-histogram.svg` into `dir` (created if need be);
/// returns their paths.
pub fn write(dir: &Path, title: &str, samples: &[Sample]) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let over_time = dir.join("latency-over-time.svg");
    let histogram = dir.join("latency-histogram.svg");
    draw_over_time(&over_time, title, samples).map_err(|e| anyhow!("{e}"))?;
    draw_histogram(&histogram, title, samples).map_err(|e| anyhow!("{e}"))?;
    Ok(vec![
        over_time.display().to_string(),
        histogram.display().to_string(),
    ])
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Per slice of send time: its start (seconds since the first send), p50, p99 and max (ms).
pub fn slices(samples: &[Sample]) -> Vec<(f64, f64, f64, f64)> {
    let Some(first) = samples.iter().map(|s| s.sent).min_by(f64::total_cmp) else {
        return Vec::new();
    };
    let last = samples
        .iter()
        .map(|s| s.sent)
        .max_by(f64::total_cmp)
        .unwrap_or(first);
    let width = ((last - first) / SLICES as f64).max(1e-3);
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); SLICES + 1];
    for sample in samples {
        let index = (((sample.sent - first) / width) as usize).min(SLICES);
        buckets[index].push(sample.latency * 1000.0);
    }
    buckets
        .into_iter()
        .enumerate()
        .filter_map(|(index, mut values)| {
            values.sort_by(f64::total_cmp);
            Some((
                index as f64 * width,
                percentile(&values, 0.5)?,
                percentile(&values, 0.99)?,
                *values.last()?,
            ))
        })
        .collect()
}

fn draw_over_time(path: &Path, title: &str, samples: &[Sample]) -> Drawn {
    let slices = slices(samples);
    let x_max = slices.last().map_or(1.0, |s| s.0).max(1e-3) * 1.02;
    let y_max = slices.iter().map(|s| s.3).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: latency sent → counted"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first order was sent")
        .y_desc("latency, ms")
        .draw()?;
    for (name, color, pick) in [("max", RED, 3), ("p99", MAGENTA, 2), ("p50", BLUE, 1)] {
        chart
            .draw_series(LineSeries::new(
                slices.iter().map(|s| {
                    let y = match pick {
                        1 => s.1,
                        2 => s.2,
                        _ => s.3,
                    };
                    (s.0, y)
                }),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The histogram's bars: (lower edge ms, upper edge ms, orders).
pub fn bins(samples: &[Sample]) -> Vec<(f64, f64, usize)> {
    let max = samples
        .iter()
        .map(|s| s.latency * 1000.0)
        .fold(0.0, f64::max);
    let width = (max / BINS as f64).max(1e-3);
    let mut counts = vec![0_usize; BINS + 1];
    for sample in samples {
        let index = ((sample.latency * 1000.0 / width).max(0.0) as usize).min(BINS);
        counts[index] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(index, count)| (index as f64 * width, (index + 1) as f64 * width, count))
        .collect()
}

fn draw_histogram(path: &Path, title: &str, samples: &[Sample]) -> Drawn {
    let bins = bins(samples);
    let x_max = bins.last().map_or(1.0, |b| b.1);
    let y_max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.05;
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: latency histogram ({} orders)", samples.len()),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("latency sent → counted, ms")
        .y_desc("orders")
        .draw()?;
    chart.draw_series(bins.iter().map(|(low, high, count)| {
        Rectangle::new(
            [(*low, 0.0), (*high, *count as f64)],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Sample> {
        (0..1000)
            .map(|i| Sample {
                sent: 1000.0 + i as f64 / 100.0,
                latency: 0.1 + (i % 10) as f64 / 100.0,
            })
            .collect()
    }

    #[test]
    fn every_order_falls_in_one_bar() {
        let bins = bins(&samples());
        assert_eq!(bins.iter().map(|b| b.2).sum::<usize>(), 1000);
    }

    #[test]
    fn slices_span_the_run_and_keep_the_worst() {
        let slices = slices(&samples());
        assert!(slices.len() > 100 && slices.len() <= SLICES + 1);
        let worst = slices.iter().map(|s| s.3).fold(0.0, f64::max);
        assert!((worst - 190.0).abs() < 1e-6, "{worst}");
    }

    #[test]
    fn both_plots_are_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("vault-bench-plot-{}", std::process::id()));
        let paths = write(&dir, "test", &samples()).expect("plots");
        for path in &paths {
            let text = std::fs::read_to_string(path).expect("written");
            assert!(text.starts_with("<svg") || text.contains("<svg"), "{path}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
