//! The HTML report of a run (a self-contained page with inline SVG: no scripts, no external
//! assets) and the index page of a sweep. Output is a function of the report alone, so the same
//! seed renders byte-identical pages.

use std::fmt::Write as _;

use larder_sim::RunReport;
use larder_sim::workload::op_fields;
use larder_workloads::{Function, Operation, Outcome};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 70.0;
const ROW: f64 = 16.0;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "#2e7d32",
        Outcome::Fail => "#9e9e9e",
        Outcome::Info => "#ef6c00",
    }
}

/// Simulated milliseconds of an operation's invocation and completion (an operation that never
/// completed is drawn as an instant).
fn span_ms(op: &Operation) -> (u64, u64) {
    let invoke = op.invoke_ns / 1_000_000;
    (invoke, op.complete_ns.map_or(invoke, |end| end / 1_000_000))
}

/// Keys a violation names (a counter's or a register's), to highlight their ops.
fn failing_keys(report: &RunReport) -> Vec<String> {
    let mut keys: Vec<String> = report
        .violations
        .iter()
        .filter_map(|violation| violation.key().map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The page of one run.
pub fn run_page(report: &RunReport, replay: &str) -> String {
    let mut out = String::new();
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Larder seed {seed} {verdict}</title>\
         <style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.fail{{color:#c62828}}\
         .pass{{color:#2e7d32}}code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>",
        seed = report.seed
    );
    let _ = write!(
        out,
        "<h1>Seed {} <span class=\"{}\">{verdict}</span></h1>",
        report.seed,
        verdict.to_lowercase()
    );
    let _ = write!(
        out,
        "<p>Replay: <code>{}</code></p><table>\
         <tr><th>simulated</th><td>{:.3} s</td></tr>\
         <tr><th>operations</th><td>ok {} · fail {} · info {}</td></tr>\
         <tr><th>trace</th><td>{} events, hash <code>{}</code></td></tr>\
         <tr><th>linearizability</th><td>{}</td></tr></table>",
        escape(replay),
        report.sim_seconds,
        report.ops.ok,
        report.ops.fail,
        report.ops.info,
        report.trace_events,
        escape(&report.trace_hash),
        escape(
            report
                .linearizability
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
        )
    );
    if !report.violations.is_empty() {
        out.push_str("<h2 class=\"fail\">Violations</h2><ul>");
        for violation in &report.violations {
            let _ = write!(
                out,
                "<li class=\"fail\">{}</li>",
                escape(&violation.to_string())
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Faults</h2><table><tr><th>kind</th><th>count</th></tr>");
    for (kind, count) in &report.faults {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{count}</td></tr>",
            escape(kind.as_str())
        );
    }
    out.push_str("</table>");
    out.push_str("<h2>Timeline</h2><p>One row per client; a bar from invoke to completion: \
                  <span style=\"color:#2e7d32\">ok</span>, <span style=\"color:#9e9e9e\">fail</span>, \
                  <span style=\"color:#ef6c00\">info</span>. Red lines: faults (hover for details). \
                  Ops on a key a violation names are outlined red, and their time span shaded.</p>");
    let operations = report.history.operations().unwrap_or_default();
    out.push_str(&timeline(report, &operations));
    out.push_str("<h2>Latency</h2><p>Completion time minus invoke time, by invoke time.</p>");
    out.push_str(&latency_plot(&operations));
    out.push_str("</body></html>\n");
    out
}

fn timeline(report: &RunReport, history: &[Operation]) -> String {
    let end_ms = history
        .iter()
        .map(|op| span_ms(op).1)
        .chain(report.fault_log.iter().map(|fault| fault.at_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut clients: Vec<u64> = history.iter().map(|op| op.process).collect();
    clients.sort_unstable();
    clients.dedup();
    let height = 40.0 + ROW * clients.len() as f64;
    let x = |ms: u64| LEFT + (WIDTH - LEFT - 10.0) * ms as f64 / end_ms;
    let failing = failing_keys(report);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" style=\"border:1px solid #ddd\">"
    );
    // The failing window: from the first to the last op on a failing key.
    let window: Vec<&Operation> = history
        .iter()
        .filter(|op| failing.contains(&op.key))
        .collect();
    if let (Some(start), Some(end)) = (
        window.iter().map(|op| span_ms(op).0).min(),
        window.iter().map(|op| span_ms(op).1).max(),
    ) {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\" fill=\"#ffebee\"/>",
            x(start),
            (x(end) - x(start)).max(1.0)
        );
    }
    for (row, client) in clients.iter().enumerate() {
        let y = 30.0 + ROW * row as f64;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"11\">n{client}</text>",
            y + 10.0
        );
        for op in history.iter().filter(|op| op.process == *client) {
            let (invoke_ms, complete_ms) = span_ms(op);
            let (kind, value, delta) = op_fields(op.f, &op.value, &op.output, op.outcome);
            let stroke = if failing.contains(&op.key) {
                " stroke=\"#c62828\" stroke-width=\"1\""
            } else {
                ""
            };
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" fill=\"{}\"{stroke}><title>{}</title></rect>",
                x(invoke_ms),
                y + 2.0,
                (x(complete_ms) - x(invoke_ms)).max(0.8),
                colour(op.outcome),
                escape(&format!(
                    "{kind} {} {value:?} {delta} [{invoke_ms} .. {complete_ms} ms] {:?} {}",
                    op.key,
                    op.outcome,
                    op.error.as_deref().unwrap_or("")
                ))
            );
        }
    }
    for fault in &report.fault_log {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"14\" x2=\"{0:.1}\" y2=\"{height}\" stroke=\"#c62828\" stroke-dasharray=\"3,2\"><title>{1} ms: {2}</title></line>\
             <text x=\"{0:.1}\" y=\"11\" font-size=\"9\" fill=\"#c62828\">{3}</text>",
            x(fault.at_ms),
            fault.at_ms,
            escape(&fault.detail),
            escape(fault.kind.as_str())
        );
    }
    svg.push_str("</svg>");
    svg
}

fn latency_plot(history: &[Operation]) -> String {
    let height = 260.0;
    let latency_ms = |op: &Operation| {
        let (invoke, complete) = span_ms(op);
        complete.saturating_sub(invoke)
    };
    let end_ms = history
        .iter()
        .map(|op| span_ms(op).0)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_latency = history.iter().map(latency_ms).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" style=\"border:1px solid #ddd\">\
         <text x=\"4\" y=\"14\" font-size=\"11\">{max_latency:.0} ms</text>\
         <text x=\"4\" y=\"{:.0}\" font-size=\"11\">0</text>",
        height - 6.0
    );
    for op in history {
        let latency = latency_ms(op) as f64;
        let cx = LEFT + (WIDTH - LEFT - 10.0) * span_ms(op).0 as f64 / end_ms;
        let cy = height - 10.0 - (height - 30.0) * latency / max_latency;
        let shape = match op.f {
            Function::Write | Function::Cas => "#1565c0",
            Function::Read => "#6a1b9a",
            Function::Add => "#00838f",
            Function::Append => "#ad1457",
            Function::SetTtl | Function::Expire | Function::Persist | Function::Ttl => "#ef6c00",
            Function::MRead | Function::MWrite | Function::MDel => "#2e7d32",
            f if f.is_collection() => "#4e342e",
            _ => "#616161",
        };
        let fill = if op.outcome == Outcome::Ok {
            shape
        } else {
            colour(op.outcome)
        };
        let _ = write!(
            svg,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"1.6\" fill=\"{fill}\"/>"
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One row of a sweep's index page.
pub struct IndexRow {
    pub seed: u64,
    pub passed: bool,
    pub ops: u64,
    pub faults: u64,
    pub trace_hash: String,
    pub page: String,
    pub violations: Vec<String>,
}

/// The index page of a sweep: one row per seed, failures first, then the fault-kind coverage
/// (seeds that applied each kind, and the kinds no seed applied).
pub fn index_page(rows: &[IndexRow], coverage: &crate::Coverage) -> String {
    let mut sorted: Vec<&IndexRow> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.passed, row.seed));
    let failed = rows.iter().filter(|row| !row.passed).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Larder sweep</title>\
         <style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px}}.fail{{color:#c62828}}.pass{{color:#2e7d32}}</style>\
         </head><body><h1>Sweep: {} seeds, {failed} failed</h1><table>\
         <tr><th>seed</th><th>verdict</th><th>ops</th><th>faults</th><th>trace hash</th><th>violations</th></tr>",
        rows.len()
    );
    for row in sorted {
        let (class, verdict) = if row.passed {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"{class}\">{verdict}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&row.page),
            row.seed,
            row.ops,
            row.faults,
            escape(&row.trace_hash[..row.trace_hash.len().min(16)]),
            escape(&row.violations.join("; "))
        );
    }
    out.push_str("</table>");
    coverage_table(
        &mut out,
        ("Fault coverage", "fault kind", "faults", "Never applied"),
        coverage.seeds,
        coverage
            .applied
            .iter()
            .map(|(kind, counts)| (kind.as_str(), *counts)),
        coverage.never_applied().iter().map(|kind| kind.as_str()),
    );
    coverage_table(
        &mut out,
        ("Fault points", "fault point", "passes", "Never hit"),
        coverage.seeds,
        coverage
            .points
            .iter()
            .map(|(point, counts)| (point.as_str(), *counts)),
        coverage.never_hit().iter().map(|point| point.as_str()),
    );
    out.push_str("</body></html>\n");
    out
}

/// One coverage table of the index page: a row per name with (count, seeds), then the names
/// no seed reached. `titles`: (heading, name column, count column, label of the never list).
fn coverage_table<'a>(
    out: &mut String,
    (heading, name, count, never_label): (&str, &str, &str, &str),
    seeds_total: u64,
    rows: impl Iterator<Item = (&'a str, (u64, u64))>,
    never: impl Iterator<Item = &'a str>,
) {
    let _ = write!(
        out,
        "<h2>{heading}</h2><table><tr><th>{name}</th><th>seeds</th><th>{count}</th></tr>"
    );
    for (name, (count, seeds)) in rows {
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{seeds}/{seeds_total}</td><td>{count}</td></tr>"
        );
    }
    let never: Vec<&str> = never.collect();
    let _ = write!(
        out,
        "</table><p>{never_label}: <span class=\"fail\">{}</span></p>",
        if never.is_empty() {
            "none".to_string()
        } else {
            escape(&never.join(", "))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn index_lists_failures_first_and_links_pages() {
        let row = |seed, passed| IndexRow {
            seed,
            passed,
            ops: 10,
            faults: 2,
            trace_hash: "abcdef0123456789abcdef".into(),
            page: format!("seed-{seed}.html"),
            violations: if passed {
                vec![]
            } else {
                vec!["counter c:0: <bad>".into()]
            },
        };
        let mut coverage = crate::Coverage::default();
        coverage.add(&std::collections::BTreeMap::from([(
            larder_faults::FaultKind::Crash,
            2,
        )]));
        let page = index_page(&[row(1, true), row(2, false)], &coverage);
        let failed = page.find("seed-2.html").expect("failed seed listed");
        let passed = page.find("seed-1.html").expect("passed seed listed");
        assert!(failed < passed, "failures come first");
        assert!(page.contains("&lt;bad&gt;"), "violations are escaped");
        assert!(page.contains("2 seeds, 1 failed"));
        assert!(page.contains("<td>crash</td><td>1/1</td><td>2</td>"));
        assert!(page.contains("Never applied: <span class=\"fail\">"));
        assert!(page.contains("Never hit: <span class=\"fail\">"));
        assert!(
            page.contains("partition_one_way"),
            "unapplied kinds are named"
        );
    }
}
