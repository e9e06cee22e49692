//! `lockctl bench-charts`: the benchmark figures as SVG charts (plotters, SVG backend only: no
//! system font libraries), drawn from the JSON lines the benches print.
//!
//! Input directory (what `scripts/bench-charts` writes; every file optional, a chart whose input
//! is missing is skipped):
//! - `lock.jsonl`: `lockctl bench --json` → `lock-cycles.svg` (cycles/s per scenario: raw Redis
//!   and each primitive);
//! - `lock-peer.jsonl`: `cargo bench -p lockstock-lock --bench against_rslock -- --json` →
//!   `lock-vs-rslock.svg` (cycles/s of raw `SET` / 2, ours and rslock, per shape and runtime);
//! - `contended-<N>.jsonl`: `lockctl bench --scenario contended --processes --contenders N
//!   --json` → `lock-contended.svg` (owner switches/s) and `lock-switch-wait.svg` (p50/p99);
//! - `pipeline-<label>.jsonl`: `lockctl bench-pipeline --json` (label e.g. `fsync-on`) →
//!   `pipeline-orders.svg` and `pipeline-latency.svg`;
//! - `scale-<label>.jsonl`: `lockctl bench-pipeline --scale --json` (label `single` or `cluster`)
//!   → `scale-orders.svg` and `scale-p99.svg`;
//! - `commands.txt`: `<file stem>: <command>` lines, printed under each chart;
//! - `load.txt`: `<file stem>: <uptime at the start> → <load average at the end>` lines, printed
//!   under each chart drawn from that file.
//!
//! - When a chart is drawn, then it states the machine (cores, memory, CPU model, from `/proc`),
//!   the settings of its inputs (Postgres `fsync` and `synchronous_commit` where recorded) and
//!   the commands that produced them.
//! - Not guaranteed: the machine stated is the one that *renders*; `scripts/bench-charts` runs the
//!   benches and renders on the same machine.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;
use plotters::{coord::Shift, prelude::*};
use serde_json::Value;

/// The figures of one chart: named series of `(x, y)` points or of bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points (line charts) or `(category index, value)` (bar charts).
    pub points: Vec<(f64, f64)>,
}

/// What every chart states besides its data.
#[derive(Debug, Clone, Default)]
pub struct Footer {
    /// Footer lines, printed in order (machine, settings, commands, load).
    pub lines: Vec<String>,
}

/// The machine, as `/proc` describes it: `"2 cores (<model>), 23.4 GiB memory"`.
pub fn machine_from_proc() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    format!(
        "machine: {cores} cores ({model}), {:.1} GiB memory",
        mem_kib / 1024.0 / 1024.0
    )
}

const SIZE: (u32, u32) = (960, 600);
const FOOTER_LINE: i32 = 15;

/// A bar chart: `categories` along x, one bar per series in each, SVG text.
pub fn bar_chart(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Series],
    footer: &Footer,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let plot = frame(&root, footer)?;
        let per = series.len().max(1) + 1; // slots per category: one per series, one gap
        let slots = (categories.len() * per).max(1);
        // Headroom for the legend in the upper right: a row per series above the tallest bar.
        let y_max = max_y(series) * (1.0 + 0.08 * series.len() as f64);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d((0..slots).into_segmented(), 0f64..y_max)?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(s) if s % per == (per - 1) / 2 => {
                categories.get(s / per).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(slots)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .draw()?;
        for (j, s) in series.iter().enumerate() {
            let color = Palette99::pick(j).to_rgba();
            chart
                .draw_series(s.points.iter().map(|&(category, value)| {
                    let slot = category as usize * per + j;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(slot), 0.0),
                            (SegmentValue::Exact(slot + 1), value),
                        ],
                        color.filled(),
                    )
                }))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(svg)
}

/// A line chart over a log-scaled x axis (process or worker counts), SVG text.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    footer: &Footer,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let plot = frame(&root, footer)?;
        let x_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((0.9f64..x_max * 1.15).log_scale(), 0f64..max_y(series))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (j, s) in series.iter().enumerate() {
            let color = Palette99::pick(j).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present()?;
    }
    Ok(svg)
}

/// The series legend, boxed on a translucent white background, at `position`.
fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Fills the background, writes the footer at the bottom and returns the area above it.
fn frame<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    footer: &Footer,
) -> anyhow::Result<DrawingArea<SVGBackend<'a>, Shift>> {
    root.fill(&WHITE)?;
    let height = FOOTER_LINE * footer.lines.len() as i32 + 10;
    let (plot, bottom) = root.split_vertically(SIZE.1 as i32 - height);
    for (i, line) in footer.lines.iter().enumerate() {
        bottom.draw(&Text::new(
            line.clone(),
            (10, 4 + FOOTER_LINE * i as i32),
            ("monospace", 11).into_font().color(&BLACK.mix(0.75)),
        ))?;
    }
    Ok(plot)
}

/// The y range's top: 10 % above the largest value (1 when there is none).
fn max_y(series: &[Series]) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// JSON lines of `path` (blank and unparsable lines skipped); empty when the file is missing.
fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn num(v: &Value, field: &str) -> Option<f64> {
    v.get(field).and_then(Value::as_f64)
}

fn text<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Files of `dir` named `<prefix><label>.jsonl`, by label.
fn labelled(dir: &Path, prefix: &str) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(label) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(".jsonl"))
        {
            found.insert(label.to_owned(), entry.path());
        }
    }
    found
}

/// What the input directory says about how its files were made.
struct Inputs {
    machine: String,
    commands: BTreeMap<String, String>,
    load: BTreeMap<String, String>,
}

impl Inputs {
    fn read(dir: &Path, machine: String) -> Self {
        let read_map = |name: &str| -> BTreeMap<String, String> {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        };
        let commands = read_map("commands.txt");
        let load = read_map("load.txt");
        Self {
            machine,
            commands,
            load,
        }
    }

    /// The footer for a chart drawn from the files `stem` names: that file alone, or every
    /// file whose stem starts with it when it ends in `-` (`contended-`: `contended-1`,
    /// `contended-2`, …).
    fn footer(&self, settings: &str, stem: &str) -> Footer {
        let mut lines = vec![self.machine.clone(), format!("settings: {settings}")];
        let mut seen = Vec::new();
        let drawn_from = |file: &str| {
            if stem.ends_with('-') {
                file.starts_with(stem)
            } else {
                file == stem
            }
        };
        for (file, command) in &self.commands {
            if drawn_from(file) && !seen.contains(command) {
                lines.push(format!("$ {command}"));
                seen.push(command.clone());
            }
        }
        for (file, load) in &self.load {
            if drawn_from(file) {
                lines.push(format!("load ({file}): {load}"));
            }
        }
        Footer { lines }
    }
}

/// The Postgres settings recorded on a bench line, as `fsync=on synchronous_commit=on`.
fn postgres_settings(line: &Value) -> Option<String> {
    let pg = line.get("postgres")?;
    Some(format!(
        "fsync={} synchronous_commit={}",
        text(pg, "fsync"),
        text(pg, "synchronous_commit")
    ))
}

/// Draws every chart whose input is in `input` into `out`, stating `machine`; the paths written.
pub fn render_all(input: &Path, out: &Path, machine: String) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ctx = Inputs::read(input, machine);
    let mut charts: Vec<(&str, String)> = Vec::new();

    // Lock cycles per second, ours against raw Redis and the peer.
    let lock: Vec<Value> = read_lines(&input.join("lock.jsonl"))
        .into_iter()
        .filter(|l| !text(l, "scenario").starts_with("contended"))
        .collect();
    if !lock.is_empty() {
        let categories: Vec<String> = lock.iter().map(|l| text(l, "scenario").into()).collect();
        let series = vec![Series {
            name: "cycles (or commands) per second".into(),
            points: lock
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, num(l, "ops_per_sec").unwrap_or(0.0)))
                .collect(),
        }];
        let footer = ctx.footer(
            "one Redis, one process (the peer: lock-vs-rslock.svg)",
            "lock",
        );
        charts.push((
            "lock-cycles.svg",
            bar_chart(
                "lockctl bench: raw Redis commands and lock cycles per second",
                "per second",
                &categories,
                &series,
                &footer,
            )?,
        ));
    }

    // Lock cycles per second beside the peer, one run of the same loop three ways.
    let peer_rows = read_lines(&input.join("lock-peer.jsonl"));
    if !peer_rows.is_empty() {
        let (categories, series) = peer_series(&peer_rows);
        let footer = ctx.footer(
            "one Redis, one process; raw = SET, a cycle = acquire + release (two round trips)",
            "lock-peer",
        );
        charts.push((
            "lock-vs-rslock.svg",
            bar_chart(
                "Lock cycles per second: lockstock, rslock and raw Redis",
                "cycles per second",
                &categories,
                &series,
                &footer,
            )?,
        ));
    }

    // Contended: owner switches and switch waits against contender processes.
    let mut contended: Vec<(f64, Value)> = labelled(input, "contended-")
        .into_iter()
        .filter_map(|(n, path)| {
            let line = read_lines(&path)
                .into_iter()
                .find(|l| text(l, "scenario").starts_with("contended"))?;
            Some((n.parse().ok()?, line))
        })
        .collect();
    contended.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !contended.is_empty() {
        let pick = |field: &str, scale: f64| -> Vec<(f64, f64)> {
            contended
                .iter()
                .filter_map(|(n, l)| Some((*n, num(l, field)? * scale)))
                .collect()
        };
        let footer = ctx.footer("one key, one process per contender", "contended-");
        charts.push((
            "lock-contended.svg",
            line_chart(
                "Owner switches per second against contending processes",
                "contender processes",
                "owner switches / s",
                &[Series {
                    name: "owner switches / s".into(),
                    points: pick("owner_switches_per_sec", 1.0),
                }],
                &footer,
            )?,
        ));
        charts.push((
            "lock-switch-wait.svg",
            line_chart(
                "Switch wait (release → next owner) against contending processes",
                "contender processes",
                "ms",
                &[
                    Series {
                        name: "switch wait p50".into(),
                        points: pick("switch_wait_p50_us", 1e-3),
                    },
                    Series {
                        name: "switch wait p99".into(),
                        points: pick("switch_wait_p99_us", 1e-3),
                    },
                ],
                &footer,
            )?,
        ));
    }

    // Pipeline: orders/s and latency percentiles for even, hot, mixed, per settings label.
    let pipeline: BTreeMap<String, Vec<Value>> = labelled(input, "pipeline-")
        .into_iter()
        .map(|(label, path)| (label, read_lines(&path)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if !pipeline.is_empty() {
        let cases = ["pg-ceiling", "pg-single", "even", "hot", "mixed"];
        let categories: Vec<String> = cases.iter().map(|c| (*c).into()).collect();
        let settings: Vec<String> = pipeline
            .iter()
            .map(|(label, lines)| {
                let s = lines
                    .first()
                    .and_then(postgres_settings)
                    .unwrap_or_default();
                format!("{label}: {s}")
            })
            .collect();
        let footer = ctx.footer(&settings.join("; "), "pipeline-");
        let per_case = |field: &str, scale: f64, suffix: &str| -> Vec<Series> {
            pipeline
                .iter()
                .map(|(label, lines)| Series {
                    name: format!("{label}{suffix}"),
                    points: cases
                        .iter()
                        .enumerate()
                        .filter_map(|(i, case)| {
                            let line = lines.iter().find(|l| text(l, "scenario") == *case)?;
                            Some((i as f64, num(line, field)? * scale))
                        })
                        .collect(),
                })
                .collect()
        };
        charts.push((
            "pipeline-orders.svg",
            bar_chart(
                "Pipeline orders per second (commits/s for the pg references)",
                "per second",
                &categories,
                &per_case("ops_per_sec", 1.0, ""),
                &footer,
            )?,
        ));
        let mut latency = per_case("p50_us", 1e-3, " p50");
        latency.extend(per_case("p99_us", 1e-3, " p99"));
        charts.push((
            "pipeline-latency.svg",
            bar_chart(
                "Push-to-commit latency (commit latency for the pg references)",
                "ms",
                &categories,
                &latency,
                &footer,
            )?,
        ));
    }

    // Scaling: orders/s and p99 against worker processes, per products and Redis mode.
    let mut scale: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut scale_settings = String::new();
    for (_, path) in labelled(input, "scale-") {
        for line in read_lines(&path) {
            let name = format!(
                "{} Redis, {} products",
                text(&line, "redis"),
                num(&line, "products").unwrap_or(0.0)
            );
            if scale_settings.is_empty() {
                scale_settings = postgres_settings(&line).unwrap_or_default();
            }
            scale.entry(name).or_default().push((
                num(&line, "workers").unwrap_or(0.0),
                num(&line, "orders_per_sec").unwrap_or(0.0),
                num(&line, "p99_us").unwrap_or(0.0) * 1e-3,
            ));
        }
    }
    if !scale.is_empty() {
        let footer = ctx.footer(&scale_settings, "scale-");
        let series = |pick: fn(&(f64, f64, f64)) -> f64| -> Vec<Series> {
            scale
                .iter()
                .map(|(name, points)| Series {
                    name: name.clone(),
                    points: points.iter().map(|p| (p.0, pick(p))).collect(),
                })
                .collect()
        };
        charts.push((
            "scale-orders.svg",
            line_chart(
                "Scaling: orders per second against worker processes",
                "worker processes",
                "orders / s",
                &series(|p| p.1),
                &footer,
            )?,
        ));
        charts.push((
            "scale-p99.svg",
            line_chart(
                "Scaling: push-to-commit p99 against worker processes",
                "worker processes",
                "ms",
                &series(|p| p.2),
                &footer,
            )?,
        ));
    }

    let mut written = Vec::new();
    for (name, svg) in charts {
        let path = out.join(name);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The bar groups (shape and runtime) and the series of the peer chart: raw `SET`s halved (a
/// lock cycle is two round trips), ours, rslock, and our two scripts sent alone (the protocol's
/// floor; absent from runs before it was measured).
fn peer_series(rows: &[Value]) -> (Vec<String>, Vec<Series>) {
    let mut categories: Vec<String> = Vec::new();
    for row in rows {
        let category = peer_category(row);
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    let series = [
        ("raw", "raw SET / 2", 0.5),
        ("lockstock", "lockstock (fenced)", 1.0),
        ("rslock", "rslock 0.10 (no fence)", 1.0),
        ("scripts", "our two scripts alone (floor)", 1.0),
    ]
    .iter()
    .map(|&(peer, name, scale)| Series {
        name: name.into(),
        points: rows
            .iter()
            .filter(|row| text(row, "peer") == peer)
            .filter_map(|row| {
                let at = categories.iter().position(|c| *c == peer_category(row))?;
                Some((at as f64, num(row, "ops_per_sec")? * scale))
            })
            .collect(),
    })
    .filter(|series| !series.points.is_empty())
    .collect();
    (categories, series)
}

/// The bar group of an `against_rslock` row: its shape and runtime flavour.
fn peer_category(row: &Value) -> String {
    let tasks = num(row, "tasks").unwrap_or(1.0);
    let shape = if tasks > 1.0 {
        format!("{tasks} tasks")
    } else {
        "one task".to_owned()
    };
    format!("{shape}, {}", text(row, "runtime"))
}

/// A short summary of what was drawn, one line per chart.
pub fn summary(written: &[PathBuf]) -> String {
    let mut text = String::new();
    for path in written {
        let _ = writeln!(text, "wrote {}", path.display());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer() -> Footer {
        Footer {
            lines: vec!["machine: test".into(), "$ lockctl bench".into()],
        }
    }

    #[test]
    fn a_line_chart_names_its_series_and_states_its_footer() {
        let series = [
            Series {
                name: "single Redis, 100 products".into(),
                points: vec![(1.0, 100.0), (2.0, 180.0), (4.0, 250.0)],
            },
            Series {
                name: "cluster Redis, 1 products".into(),
                points: vec![(1.0, 50.0), (2.0, 60.0)],
            },
        ];
        let svg = line_chart("Scaling", "workers", "orders / s", &series, &footer()).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("single Redis, 100 products"));
        assert!(svg.contains("cluster Redis, 1 products"));
        assert!(svg.contains("machine: test"));
        assert!(svg.contains("$ lockctl bench"));
        assert!(svg.matches("<circle").count() >= 5, "one marker per point");
    }

    /// A fresh input directory holding `files` (name, contents).
    fn input_dir(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lockstock-charts-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        dir
    }

    /// Every chart `render_all` draws from `dir`: (file name, SVG text), in order.
    fn rendered(dir: &Path) -> Vec<(String, String)> {
        render_all(dir, &dir.join("out"), "machine: test".into())
            .unwrap()
            .iter()
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(path).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_footer_states_the_commands_and_load_of_its_own_inputs_only() {
        let dir = input_dir(&[
            (
                "commands.txt",
                "lock: lockctl bench --json\nlock-peer: cargo bench against_rslock\n\
                 contended-2: lockctl bench --contenders 2\ncontended-16: lockctl bench --contenders 16\n",
            ),
            ("load.txt", "lock: L1\nlock-peer: L2\ncontended-2: L3\n"),
        ]);
        let ctx = Inputs::read(&dir, "machine: test".into());

        let lock = ctx.footer("s", "lock").lines.join("\n");
        assert!(lock.contains("$ lockctl bench --json") && lock.contains("load (lock): L1"));
        assert!(
            !lock.contains("against_rslock") && !lock.contains("L2"),
            "{lock}"
        );
        let contended = ctx.footer("s", "contended-").lines.join("\n");
        assert!(contended.contains("--contenders 2") && contended.contains("--contenders 16"));
        assert!(contended.contains("load (contended-2): L3") && !contended.contains("L1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn render_all_draws_the_peer_chart_with_raw_halved() {
        let mut lines = Vec::new();
        for runtime in ["current_thread", "multi_thread"] {
            for (tasks, raw, ours, peer) in [
                (1, 14000.0, 5800.0, 6700.0),
                (50, 210000.0, 64000.0, 87000.0),
            ] {
                for (name, ops) in [("raw", raw), ("lockstock", ours), ("rslock", peer)] {
                    lines.push(format!(
                        r#"{{"scenario":"x","peer":"{name}","runtime":"{runtime}","tasks":{tasks},"ops_per_sec":{ops}}}"#
                    ));
                }
            }
        }
        let dir = input_dir(&[
            ("lock-peer.jsonl", &lines.join("\n")),
            (
                "commands.txt",
                "lock-peer: cargo bench -p lockstock-lock --bench against_rslock -- --json\n",
            ),
            (
                "load.txt",
                "lock-peer: 17:11:49 load average: 1.82 -> at the end load average: 1.93\n\
                 pipeline-fsync-on: 17:33:56 load average: 2.95 -> at the end load average: 6.24\n",
            ),
        ]);

        let charts = rendered(&dir);

        assert_eq!(charts.len(), 1);
        let (name, svg) = &charts[0];
        assert_eq!(name, "lock-vs-rslock.svg");
        for expected in [
            "one task, current_thread",
            "50 tasks, multi_thread",
            "raw SET / 2",
            "rslock 0.10",
            "$ cargo bench -p lockstock-lock --bench against_rslock -- --json",
            "load (lock-peer): 17:11:49 load average: 1.82",
        ] {
            assert!(svg.contains(expected), "{expected} missing");
        }
        assert!(!svg.contains("17:33:56"), "another bench's load");
        assert!(
            svg.matches("<rect").count() >= 12 + 3,
            "12 bars and 3 legend marks"
        );
        let rows: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (categories, series) = peer_series(&rows);
        assert_eq!(categories.len(), 4);
        assert_eq!(series[0].points[1], (1.0, 105_000.0), "raw is halved");
        assert_eq!(series[1].points[1], (1.0, 64_000.0));
        assert_eq!(series[2].points[3], (3.0, 87_000.0));
        assert_eq!(
            series.len(),
            3,
            "a run without the floor rows draws no floor series"
        );
        assert!(!svg.contains("(floor)"));

        let mut with_floor = rows.clone();
        with_floor.push(serde_json::json!({
            "peer": "scripts", "runtime": "multi_thread", "tasks": 50, "ops_per_sec": 70000.0
        }));
        let (_, series) = peer_series(&with_floor);
        assert_eq!(series.len(), 4);
        assert_eq!(series[3].name, "our two scripts alone (floor)");
        assert_eq!(series[3].points, vec![(3.0, 70_000.0)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn render_all_draws_the_pipeline_charts_from_bench_lines() {
        let line = |scenario: &str, ops: f64| {
            format!(
                r#"{{"scenario":"{scenario}","ops_per_sec":{ops},"ops":10,"p50_us":900,"p99_us":4000,"postgres":{{"fsync":"on","synchronous_commit":"on","max_connections":100}},"note":""}}"#
            )
        };
        let lines: Vec<String> = [
            ("pg-ceiling", 5000.0),
            ("pg-single", 700.0),
            ("even", 6000.0),
            ("hot", 3000.0),
            ("mixed", 4000.0),
        ]
        .iter()
        .map(|(s, o)| line(s, *o))
        .collect();
        let dir = input_dir(&[
            ("pipeline-fsync-on.jsonl", &lines.join("\n")),
            (
                "commands.txt",
                "pipeline-fsync-on: lockctl bench-pipeline --json\n",
            ),
        ]);

        let charts = rendered(&dir);

        let names: Vec<&str> = charts.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["pipeline-orders.svg", "pipeline-latency.svg"]);
        let orders = &charts[0].1;
        for expected in [
            "fsync-on",
            "even",
            "hot",
            "mixed",
            "pg-ceiling",
            "fsync=on synchronous_commit=on",
            "$ lockctl bench-pipeline --json",
        ] {
            assert!(orders.contains(expected), "{expected} missing");
        }
        assert!(orders.matches("<rect").count() >= 5, "one bar per case");
        let latency = &charts[1].1;
        assert!(latency.contains("fsync-on p50") && latency.contains("fsync-on p99"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
