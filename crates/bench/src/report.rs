//! Output: the stdout table, `target/bench/results.json`, and (full runs) `docs/benchmarks.md`
//! with `docs/bench-throughput.png`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::load::Point;

/// One named figure.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub name: String,
    pub value: f64,
    /// The unit as written in the report (a child's figures keep the unit the child wrote).
    pub unit: Cow<'static, str>,
}

/// Figures under a heading.
#[derive(Debug, Default)]
pub(crate) struct Section {
    pub title: String,
    pub figures: Vec<Figure>,
}

/// Broker and echo at one concurrency.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    pub concurrency: usize,
    /// Median of the rounds, figure by figure.
    pub echo: Point,
    /// Median of the rounds, figure by figure.
    pub broker: Point,
    /// Broker/echo throughput, one value per round (each from the two runs side by side).
    pub ratios: Vec<f64>,
    /// Broker/echo p99, one value per round.
    pub p99_ratios: Vec<f64>,
    /// Broker/echo process CPU time per request, one value per round.
    pub cpu_ratios: Vec<f64>,
}

impl Pair {
    /// The median of the per-round throughput ratios.
    pub(crate) fn ratio(&self) -> f64 {
        crate::load::median(self.ratios.clone())
    }

    /// The median of the per-round CPU-per-request ratios.
    pub(crate) fn cpu_ratio(&self) -> f64 {
        crate::load::median(self.cpu_ratios.clone())
    }

    /// The median of the per-round p99 ratios.
    pub(crate) fn p99_ratio(&self) -> f64 {
        crate::load::median(self.p99_ratios.clone())
    }

    /// The lowest and highest per-round throughput ratio.
    pub(crate) fn ratio_range(&self) -> (f64, f64) {
        Pair::range(&self.ratios)
    }

    fn range(v: &[f64]) -> (f64, f64) {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            })
    }
}

/// Rows of text cells under a heading (the soak's samples over time).
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A Markdown table, every column padded to its widest cell and right-aligned.
    fn markdown(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .zip(cells)
                .map(|(&w, c)| format!("{c:>w$}"))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut s = line(&self.columns);
        // Each rule cell spans its column and the two spaces around it.
        let rule: Vec<String> = widths
            .iter()
            .map(|&w| format!("{}:", "-".repeat(w + 1)))
            .collect();
        let _ = writeln!(s, "|{}|", rule.join("|"));
        for row in &self.rows {
            s.push_str(&line(row));
        }
        s
    }
}

/// Everything one run produced.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub quick: bool,
    pub cores: usize,
    pub date: String,
    /// The CPU model, from `/proc/cpuinfo`.
    pub machine: String,
    /// The one-minute load average when the run started and when it ended.
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// The cache line's round trip between two cores when the run started and when it ended
    /// ([`crate::cores`]): the machine's state that moves the audited figures most.
    pub round_trip_start: String,
    /// See `round_trip_start`.
    pub round_trip_end: String,
    pub sections: Vec<Section>,
    pub pairs: Vec<Pair>,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
    /// The targets, judged by [`Report::judge`].
    pub targets: Vec<Target>,
}

/// One target the bench checks (never a test failure: a printed PASS, MISS or NOT MEASURED).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// What is compared, in words.
    pub what: String,
    /// The requirement, e.g. `≥ 0.85`.
    pub requirement: String,
    /// The measured value, when this run measured it.
    pub value: Option<f64>,
    /// Whether the value meets the requirement.
    pub pass: bool,
}

impl Target {
    /// `PASS`, `MISS` or `NOT MEASURED`.
    pub(crate) fn verdict(&self) -> &'static str {
        match (self.value, self.pass) {
            (None, _) => "NOT MEASURED",
            (Some(_), true) => "PASS",
            (Some(_), false) => "MISS",
        }
    }

    /// The measured value as printed: four decimals, so that a value just short of its
    /// requirement (0.8497 against 0.85) does not print as the requirement itself beside a MISS.
    pub(crate) fn shown(&self) -> String {
        self.value
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
    }
}

impl Report {
    /// Starts a new section; later [`Report::add`] calls go into it.
    pub(crate) fn section(&mut self, title: &str) {
        self.sections.push(Section {
            title: title.to_owned(),
            figures: Vec::new(),
        });
    }

    /// Adds a figure to the current section.
    pub(crate) fn add(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: impl Into<Cow<'static, str>>,
    ) {
        if self.sections.is_empty() {
            self.section("figures");
        }
        if let Some(s) = self.sections.last_mut() {
            s.figures.push(Figure {
                name: name.into(),
                value,
                unit: unit.into(),
            });
        }
    }

    /// Adds a table, printed after the figures.
    pub(crate) fn table(&mut self, title: &str, columns: &[&str], rows: Vec<Vec<String>>) {
        self.tables.push(Table {
            title: title.to_owned(),
            columns: columns.iter().map(|&c| c.to_owned()).collect(),
            rows,
        });
    }

    /// A figure of this run by name (section figures only).
    pub(crate) fn figure(&self, name: &str) -> Option<f64> {
        self.sections
            .iter()
            .flat_map(|s| &s.figures)
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// The first figure whose name starts with `prefix` and ends with `suffix`.
    fn figure_like(&self, prefix: &str, suffix: &str) -> Option<f64> {
        self.sections
            .iter()
            .flat_map(|s| &s.figures)
            .find(|f| f.name.starts_with(prefix) && f.name.ends_with(suffix))
            .map(|f| f.value)
    }

    /// Checks the targets against this run's figures: the mixed ratio with the trail the
    /// manifests ship (stdout into a pipe) at least [`MIXED_TARGET`], the single-key ratio at
    /// c=64 at least [`SINGLE_TARGET`], and the p99 across an expiry with refresh-ahead at most
    /// [`EXPIRY_TARGET`] times the hit p99. A target whose figure this run did not measure is
    /// `NOT MEASURED`, never dropped.
    pub(crate) fn judge(&mut self) {
        let at_least = |what: &str, value: Option<f64>, min: f64| Target {
            what: what.to_owned(),
            requirement: format!("≥ {min}"),
            value,
            pass: value.is_some_and(|v| v >= min),
        };
        let mixed = self.figure_like("mixed.c", ".audit_stdout.throughput_ratio");
        let single = self
            .pairs
            .iter()
            .find(|p| p.concurrency == 64)
            .map(Pair::ratio);
        let across = self.figure("expiry.refresh_ahead_on.across.p99");
        let hit = self.figure("expiry.refresh_ahead_on.hit.p99");
        let expiry = across.zip(hit).map(|(a, h)| a / h.max(1e-9));
        self.targets = vec![
            at_least(
                "mixed workload / echo, throughput, stdout trail into a pipe (limits, metrics on)",
                mixed,
                MIXED_TARGET,
            ),
            at_least(
                "single-key cache hit / echo, throughput, c=64",
                single,
                SINGLE_TARGET,
            ),
            Target {
                what: "p99 across an expiry with refresh-ahead / hit p99".to_owned(),
                requirement: format!("≤ {EXPIRY_TARGET}"),
                value: expiry,
                pass: expiry.is_some_and(|v| v <= EXPIRY_TARGET),
            },
        ];
    }

    fn targets_table(&self) -> String {
        let mut s =
            String::from("| target | requirement | measured | verdict |\n|---|---:|---:|---|\n");
        for t in &self.targets {
            let value = t.shown();
            let _ = writeln!(
                s,
                "| {} | {} | {value} | {} |",
                t.what,
                t.requirement,
                t.verdict()
            );
        }
        s
    }

    /// A remark printed under the figures (skipped measurements, caveats).
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("note: {text}");
        self.notes.push(text);
    }

    fn pairs_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| concurrency | echo req/s | broker req/s | throughput ratio | ratio range over rounds | CPU per request ratio | echo p50 µs | broker p50 µs | echo p99 µs | broker p99 µs | p99 ratio | echo p99.9 µs | broker p99.9 µs |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &self.pairs {
            let (lo, hi) = Pair::range(&p.ratios);
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.3} | {lo:.3}-{hi:.3} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} |",
                p.concurrency,
                p.echo.rps,
                p.broker.rps,
                p.ratio(),
                p.cpu_ratio(),
                p.echo.p50_us,
                p.broker.p50_us,
                p.echo.p99_us,
                p.broker.p99_us,
                p.p99_ratio(),
                p.echo.p999_us,
                p.broker.p999_us,
            );
        }
        s
    }

    fn sections_markdown(&self) -> String {
        let mut s = String::new();
        for sec in &self.sections {
            let _ = writeln!(s, "\n### {}\n", sec.title);
            let _ = writeln!(s, "| figure | value | unit |\n|---|---:|---|");
            for f in &sec.figures {
                let _ = writeln!(s, "| `{}` | {} | {} |", f.name, fmt_value(f.value), f.unit);
            }
        }
        s
    }

    /// The table on stdout.
    pub(crate) fn print(&self) {
        println!(
            "\n== tableau-token-broker benchmark ({}; {}, {} cores; {}; load average {} at the start, {} at the end; core-to-core round trip {} at the start, {} at the end) ==\n",
            if self.quick { "quick" } else { "full" },
            self.machine,
            self.cores,
            self.date,
            self.load_start,
            self.load_end,
            self.round_trip_start,
            self.round_trip_end
        );
        if !self.pairs.is_empty() {
            println!("Cache-hit GetCredentials vs echo over the same mTLS stack ({RAW_CLIENT}):\n");
            print!("{}", self.pairs_table());
        }
        for sec in &self.sections {
            println!("\n-- {} --", sec.title);
            for f in &sec.figures {
                println!("  {:<52} {:>14} {}", f.name, fmt_value(f.value), f.unit);
            }
        }
        for t in &self.tables {
            println!("\n-- {} --\n", t.title);
            print!("{}", t.markdown());
        }
        if !self.targets.is_empty() {
            println!(
                "\n-- Targets (c=64; a bench run never fails on them){} --\n",
                if self.quick {
                    "; quick run: rough figures, not the real verdict"
                } else {
                    ""
                }
            );
            for t in &self.targets {
                let value = t.shown();
                println!(
                    "  {:<12} {:<86} {:>8} (target {})",
                    t.verdict(),
                    t.what,
                    value,
                    t.requirement
                );
            }
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for n in &self.notes {
                println!("  - {n}");
            }
        }
    }

    /// Writes `results.json` (one object: date, cores, quick, figures by name with units, tables
    /// as title, columns and rows of text, notes).
    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut figures = serde_json::Map::new();
        for p in &self.pairs {
            let c = p.concurrency;
            for (who, pt) in [("echo", &p.echo), ("broker", &p.broker)] {
                figures.insert(format!("hit.c{c}.{who}.throughput"), fig(pt.rps, "req/s"));
                figures.insert(format!("hit.c{c}.{who}.p50"), fig(pt.p50_us, "µs"));
                figures.insert(format!("hit.c{c}.{who}.p99"), fig(pt.p99_us, "µs"));
                figures.insert(format!("hit.c{c}.{who}.p99_9"), fig(pt.p999_us, "µs"));
                figures.insert(
                    format!("hit.c{c}.{who}.cpu_per_request"),
                    fig(pt.cpu_us, "µs"),
                );
                figures.insert(
                    format!("hit.c{c}.{who}.errors"),
                    fig(pt.errors as f64, "requests"),
                );
            }
            let (lo, hi) = Pair::range(&p.ratios);
            figures.insert(
                format!("hit.c{c}.throughput_ratio"),
                fig(p.ratio(), "broker/echo"),
            );
            figures.insert(
                format!("hit.c{c}.throughput_ratio_min"),
                fig(lo, "broker/echo"),
            );
            figures.insert(
                format!("hit.c{c}.throughput_ratio_max"),
                fig(hi, "broker/echo"),
            );
            figures.insert(
                format!("hit.c{c}.cpu_per_request_ratio"),
                fig(p.cpu_ratio(), "broker/echo"),
            );
            figures.insert(
                format!("hit.c{c}.p99_ratio"),
                fig(p.p99_ratio(), "broker/echo"),
            );
        }
        for sec in &self.sections {
            for f in &sec.figures {
                figures.insert(f.name.clone(), fig(f.value, &f.unit));
            }
        }
        let tables: Vec<serde_json::Value> = self
            .tables
            .iter()
            .map(|t| serde_json::json!({ "title": t.title, "columns": t.columns, "rows": t.rows }))
            .collect();
        let doc = serde_json::json!({
            "date": self.date,
            "cores": self.cores,
            "quick": self.quick,
            "figures": figures,
            "tables": tables,
            "notes": self.notes,
            "machine": self.machine,
            "load_average_1m": { "start": self.load_start, "end": self.load_end },
            "core_round_trip": { "start": self.round_trip_start, "end": self.round_trip_end },
            "targets": self.targets.iter().map(|t| serde_json::json!({
                "target": t.what,
                "requirement": t.requirement,
                "value": t.value,
                "verdict": t.verdict(),
            })).collect::<Vec<_>>(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Replaces the generated part of `docs/benchmarks.md` (between the markers), keeping the
    /// hand-written parts (what is measured, how to reproduce, what limits the figures).
    pub(crate) fn write_markdown(&self, path: &Path, plot: Option<&str>) -> anyhow::Result<()> {
        const START: &str =
            "<!-- results:start (generated by `cargo run --release --bin bench`) -->";
        const END: &str = "<!-- results:end -->";
        let mut md = String::new();
        let _ = writeln!(
            md,
            "{START}\n\nFull run of {}, on {} ({} cores, shared by the load generator, the broker, the echo server and the Tableau double). Load average over one minute: {} at the start of the run, {} at the end; anything above the core count means other work (builds, say) was running beside it. A cache line's round trip between two cores: {} at the start, {} at the end (see [what limits the figures](#what-limits-the-figures)).\n",
            self.date,
            self.machine,
            self.cores,
            self.load_start,
            self.load_end,
            self.round_trip_start,
            self.round_trip_end
        );
        if !self.targets.is_empty() {
            let _ = writeln!(md, "### Targets\n");
            md.push_str(&self.targets_table());
        }
        md.push_str(&self.headline());
        let _ = writeln!(
            md,
            "\n### Single-key cache hit vs echo at each concurrency\n\nLoad generator: {RAW_CLIENT}. {ROUNDS}\n"
        );
        md.push_str(&self.pairs_table());
        if let Some(png) = plot {
            let _ = writeln!(md, "\n![throughput and p99 against concurrency]({png})");
        }
        let _ = writeln!(
            md,
            "\n### Every figure of the run\n\nThe same names as in `results.json`."
        );
        md.push_str(&self.sections_markdown());
        for t in &self.tables {
            let _ = writeln!(md, "\n### {}\n", t.title);
            md.push_str(&t.markdown());
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\nNotes from the run:\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        let _ = write!(md, "\n{END}");
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let text = match (old.find(START), old.find(END)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{}{}", &old[..a], md, &old[b + END.len()..])
            }
            _ => format!("# Benchmarks\n\n{md}\n"),
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The throughput ratios and the expiry latencies side by side, from this run's figures.
    fn headline(&self) -> String {
        let mut s = String::from(
            "\n### Throughput against echo, at 64 requests in flight\n\n| workload | audit trail | broker / echo (median of rounds) | range over rounds |\n|---|---|---:|---:|\n",
        );
        let row = |s: &mut String,
                   what: &str,
                   trail: &str,
                   ratio: Option<f64>,
                   range: Option<(f64, f64)>| {
            let ratio = ratio.map_or_else(|| "not measured".to_owned(), |r| format!("{r:.3}"));
            let range = range.map_or_else(|| "-".to_owned(), |(a, b)| format!("{a:.3}-{b:.3}"));
            let _ = writeln!(s, "| {what} | {trail} | {ratio} | {range} |");
        };
        let single = self.pairs.iter().find(|p| p.concurrency == 64);
        let one = "one key, one caller";
        row(
            &mut s,
            one,
            "off",
            single.map(Pair::ratio),
            single.map(Pair::ratio_range),
        );
        let fig = |n: &str| self.figure(n);
        row(
            &mut s,
            one,
            "file",
            fig("hit.c64.audit_file.throughput_ratio"),
            fig("hit.c64.audit_file.throughput_ratio.min")
                .zip(fig("hit.c64.audit_file.throughput_ratio.max")),
        );
        for (trail, name) in [
            ("off", "audit_off"),
            ("file", "audit_file"),
            ("stdout into a pipe (as the manifests ship)", "audit_stdout"),
        ] {
            let f = |what: &str| self.figure_like("mixed.c", &format!(".{name}.{what}"));
            row(
                &mut s,
                "mixed: 64 callers, 1,000 keys, Zipf 1.1",
                trail,
                f("throughput_ratio"),
                f("throughput_ratio.min").zip(f("throughput_ratio.max")),
            );
        }
        let _ = writeln!(
            s,
            "\n### Latency across a token's expiry (one hot key, 64 in flight)\n\n| refresh-ahead | hit p99 µs | across the expiry: p50 µs | p99 µs | p99.9 µs | max µs | sign-ins in the window |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (label, name) in [
            ("on (default)", "refresh_ahead_on"),
            ("off (`\"0s\"`)", "refresh_ahead_off"),
        ] {
            let f = |what: &str| {
                fig(&format!("expiry.{name}.{what}"))
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
            };
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                f("hit.p99"),
                f("across.p50"),
                f("across.p99"),
                f("across.p99_9"),
                f("across.max"),
                f("across.signins")
            );
        }
        s
    }

    /// Throughput and p99 against concurrency for broker and echo. Needs a TrueType font for
    /// labels (DejaVu Sans from the system); without one, no plot and a note.
    pub(crate) fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let font = FONTS.iter().find_map(|f| std::fs::read(f).ok()).context(
            "no TrueType font found for the plot's labels (apt-get install fonts-dejavu-core)",
        )?;
        let font: &'static [u8] = Box::leak(font.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, font)
            .map_err(|_| anyhow::anyhow!("the font file could not be read"))?;
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let cmax = self.pairs.iter().map(|p| p.concurrency).max().unwrap_or(1) as f64 * 1.2;
        let series = |f: fn(&Point) -> f64, broker: bool| -> Vec<(f64, f64)> {
            self.pairs
                .iter()
                .map(|p| {
                    let pt = if broker { &p.broker } else { &p.echo };
                    (p.concurrency as f64, f(pt))
                })
                .collect()
        };
        for (area, title, unit, f) in [
            (
                &left,
                "Throughput",
                "requests per second",
                (|p: &Point| p.rps) as fn(&Point) -> f64,
            ),
            (&right, "p99 latency", "microseconds", |p: &Point| p.p99_us),
        ] {
            let ymax = self
                .pairs
                .iter()
                .flat_map(|p| [f(&p.echo), f(&p.broker)])
                .fold(0.0, f64::max)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{title}: broker cache hit vs echo"),
                    ("sans-serif", 20),
                )
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d((0.8f64..cmax).log_scale(), 0f64..ymax.max(1.0))?;
            chart
                .configure_mesh()
                .x_desc("concurrent requests (log scale)")
                .y_desc(unit)
                .label_style(("sans-serif", 14))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()?;
            for (broker, color, name) in [(false, BLUE, "echo"), (true, RED, "broker")] {
                let pts = series(f, broker);
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// The mixed workload's throughput ratio to echo, with the stdout trail, must be at least this.
pub(crate) const MIXED_TARGET: f64 = 0.85;
/// The single-key cache hit's throughput ratio to echo at c=64 must be at least this.
pub(crate) const SINGLE_TARGET: f64 = 0.9;
/// The p99 across an expiry with refresh-ahead, over the hit p99, must be at most this.
pub(crate) const EXPIRY_TARGET: f64 = 2.0;

/// How the pairs table's load generator talks to both services.
const ROUNDS: &str = "Each level is eight rounds; in each, echo and broker take turns in 100 ms slices (1.5 s of each), so that the machine's drift over seconds lands on both. Requests per second and latencies are the median of each over the rounds; a ratio is the median of the per-round ratios, so it need not equal the quotient of the two medians. The broker runs with the log subscriber `serve` installs (JSON lines, `info`).";

const RAW_CLIENT: &str = "pre-encoded requests; replies read as bytes, status and length checked";

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The CPU model this runs on, from `/proc/cpuinfo` ("unknown CPU" elsewhere).
pub(crate) fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The one-minute load average now, from `/proc/loadavg` ("?" elsewhere).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn fig(value: f64, unit: &str) -> serde_json::Value {
    serde_json::json!({ "value": value, "unit": unit })
}

fn fmt_value(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
