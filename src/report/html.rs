//! `reports/deployment_report.html`: the Markdown report as one self-contained page —
//! no script, no stylesheet or font fetched, nothing outside the file — with inline SVG
//! charts of each version's request rate, P95/P99 latency and error rate across the
//! rollout's phases, the thresholds drawn in.

use super::Subject;
use super::gates::Thresholds;
use crate::rollout::evidence::{Evaluation, Evidence, Figures};
use std::fmt::Write;

/// The page.
pub fn report(s: &Subject) -> String {
    let markdown = super::markdown::report(s);
    let mut body = to_html(&markdown);
    if let Some(e) = &s.evidence
        && !e.evaluations.is_empty()
    {
        let charts = charts(e);
        // After the summary table, before "What was deployed".
        match body.find("<h2>") {
            Some(at) => body.insert_str(at, &charts),
            None => body.push_str(&charts),
        }
    }
    let title = escape(&format!("Deployment report: {} v{} (rollout #{})", s.record.model, s.record.to, s.record.id));
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1f23;background:#fff}\
main{max-width:72rem;margin:0 auto;padding:1rem}\
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem;display:block;overflow-x:auto}\
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}code,pre{font-family:ui-monospace,monospace;font-size:.85rem}\
pre{background:#f6f8fa;padding:.5rem;overflow-x:auto}blockquote{border-left:4px solid #cf222e;margin:0;padding:.25rem 1rem;background:#fff5f5}\
figure{margin:1rem 0}figcaption{font-size:.9rem;color:#57606a}svg{max-width:100%;height:auto}\
.new{stroke:#0969da}.live{stroke:#8250df}.limit{stroke:#cf222e;stroke-dasharray:6 4}.phase{stroke:#d0d7de}\
svg text{font-size:11px;fill:#57606a;paint-order:stroke;stroke:#fff;stroke-width:3px}";

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `**bold**` and `` `code` `` in escaped text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let escaped = escape(text);
    let mut rest = escaped.as_str();
    while let Some(i) = rest.find(['*', '`']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (mark, open, close) = if rest.starts_with("**") {
            ("**", "<strong>", "</strong>")
        } else if rest.starts_with('`') {
            ("`", "<code>", "</code>")
        } else {
            ("*", "*", "")
        };
        if close.is_empty() {
            out.push('*');
            rest = &rest[1..];
            continue;
        }
        match rest[mark.len()..].find(mark) {
            Some(end) => {
                out.push_str(open);
                out.push_str(&rest[mark.len()..mark.len() + end]);
                out.push_str(close);
                rest = &rest[mark.len() + end + mark.len()..];
            }
            None => {
                out.push_str(mark);
                rest = &rest[mark.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The subset of Markdown the report writes: headings, paragraphs, block quotes, lists,
/// tables and fenced code.
fn to_html(markdown: &str) -> String {
    let mut out = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(level) = (1..=3).find(|l| line.starts_with(&format!("{} ", "#".repeat(*l)))) {
            let _ = writeln!(out, "<h{level}>{}</h{level}>", inline(&line[level + 1..]));
        } else if line.starts_with("```") {
            out.push_str("<pre><code>");
            for code in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                out.push_str(&escape(code));
                out.push('\n');
            }
            out.push_str("</code></pre>\n");
        } else if let Some(quote) = line.strip_prefix("> ") {
            let _ = writeln!(out, "<blockquote><p>{}</p></blockquote>", inline(quote));
        } else if line.starts_with("- ") {
            out.push_str("<ul>\n");
            let mut item = Some(line);
            while let Some(l) = item {
                let _ = writeln!(out, "<li>{}</li>", inline(&l[2..]));
                item = lines.next_if(|n| n.starts_with("- "));
            }
            out.push_str("</ul>\n");
        } else if line.starts_with('|') {
            table(&mut out, line, &mut lines);
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(line));
        }
    }
    out
}

fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => cell.push(chars.next().expect("peeked")),
            '|' => cells.push(std::mem::take(&mut cell).trim().to_string()),
            c => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

fn table<'a>(out: &mut String, header: &str, lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) {
    out.push_str("<table>\n<thead><tr>");
    for c in cells(header) {
        let _ = write!(out, "<th>{}</th>", inline(&c));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    lines.next_if(|l| l.starts_with("| ---"));
    while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
        out.push_str("<tr>");
        for c in cells(row) {
            let _ = write!(out, "<td>{}</td>", inline(&c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// A series of one version: (seconds since the start, value).
type Series = Vec<(f64, f64)>;

fn series(
    e: &[Evaluation],
    start: f64,
    side: fn(&Evaluation) -> Option<&Figures>,
    value: impl Fn(&Figures) -> Option<f64>,
) -> Series {
    e.iter().filter_map(|v| side(v).and_then(&value).map(|y| (v.at - start, y))).collect()
}

/// The charts: request rate, P95 and P99, error rate; the new version and the live one.
fn charts(e: &Evidence) -> String {
    let start = e.phases.first().map_or(e.evaluations[0].at, |p| p.started_at);
    let evals = &e.evaluations;
    fn new(v: &Evaluation) -> Option<&Figures> {
        Some(&v.candidate)
    }
    fn live(v: &Evaluation) -> Option<&Figures> {
        v.stable.as_ref()
    }
    let t = Thresholds::of(e);
    let phases: Vec<(f64, String)> = e.phases.iter().map(|p| (p.started_at - start, p.name.clone())).collect();
    let mut out = String::from("<h2>Charts</h2>\n");
    out.push_str(&chart(
        "Requests per second in each version's window",
        &[
            ("new", series(evals, start, new, |f| Some(f.rate_per_second))),
            ("live", series(evals, start, live, |f| Some(f.rate_per_second))),
        ],
        &[],
        &phases,
        "req/s",
    ));
    out.push_str(&chart(
        "P95 and P99 latency (ms) of the new version, and the live version's P95",
        &[
            ("new", series(evals, start, new, |f| f.p95_ms)),
            ("new", series(evals, start, new, |f| f.p99_ms)),
            ("live", series(evals, start, live, |f| f.p95_ms)),
        ],
        &[t.p95_ms.map(|v| ("P95 limit", v)), t.p99_ms.map(|v| ("P99 limit", v))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        &phases,
        "ms",
    ));
    out.push_str(&chart(
        "Error rate (%) of each version's window",
        &[
            ("new", series(evals, start, new, |f| Some(f.error_rate * 100.0))),
            ("live", series(evals, start, live, |f| Some(f.error_rate * 100.0))),
        ],
        &t.error_rate.map(|v| ("limit", v * 100.0)).into_iter().collect::<Vec<_>>(),
        &phases,
        "%",
    ));
    out
}

/// One line chart as inline SVG.
fn chart(
    title: &str,
    lines: &[(&str, Series)],
    limits: &[(&str, f64)],
    phases: &[(f64, String)],
    unit: &str,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 28.0;
    let points = lines.iter().flat_map(|(_, s)| s.iter());
    let x_max = points.clone().map(|p| p.0).chain(phases.iter().map(|p| p.0)).fold(1.0_f64, f64::max);
    let data_max = points.map(|p| p.1).fold(0.0_f64, f64::max);
    // A threshold far above what was measured is named, not drawn: scaled to it, the
    // measurements would lie flat on the axis.
    let in_reach = |(_, v): &&(&str, f64)| data_max == 0.0 || *v <= data_max * 3.0;
    let drawn: Vec<&(&str, f64)> = limits.iter().filter(in_reach).collect();
    let above: Vec<&(&str, f64)> = limits.iter().filter(|l| !in_reach(l)).collect();
    let y_max = drawn.iter().map(|l| l.1).fold(data_max, f64::max).max(1e-9) * 1.1;
    let x = |v: f64| LEFT + v / x_max * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_max * (H - TOP - BOTTOM);
    let mut svg = format!("<figure><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\n", escape(title));
    let _ = writeln!(
        svg,
        "<line class=\"phase\" x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM
    );
    let mut labelled_to = 0.0;
    for (at, name) in phases {
        let px = x(*at);
        let _ =
            writeln!(svg, "<line class=\"phase\" x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{}\"/>", H - BOTTOM);
        // A phase too short to have room for its name (a spawn from a warm cache) is
        // left unnamed rather than written over the next one.
        if px >= labelled_to {
            let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{}\">{}</text>", px + 2.0, TOP + 10.0, escape(name));
            labelled_to = px + 7.0 * name.len() as f64;
        }
    }
    for (i, (name, value)) in above.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\">{} {} {unit}, far above the chart</text>",
            W - RIGHT - 230.0,
            TOP + 24.0 + 12.0 * i as f64,
            escape(name),
            format_value(*value)
        );
    }
    for (name, value) in drawn {
        let py = y(*value);
        let _ =
            writeln!(svg, "<line class=\"limit\" x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\"/>", W - RIGHT);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\">{} {}</text>",
            W - RIGHT - 90.0,
            py - 3.0,
            escape(name),
            format_value(*value)
        );
    }
    for (class, s) in lines.iter().filter(|(_, s)| !s.is_empty()) {
        let path: Vec<String> = s.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let _ = writeln!(
            svg,
            "<polyline class=\"{class}\" fill=\"none\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    let _ =
        writeln!(svg, "<text x=\"4\" y=\"{:.1}\">{} {unit}</text>", y(y_max / 1.1) + 4.0, format_value(y_max / 1.1));
    let _ = writeln!(svg, "<text x=\"4\" y=\"{}\">0</text>", H - BOTTOM);
    let _ = writeln!(svg, "<text x=\"{LEFT}\" y=\"{}\">0 s</text>", H - 8.0);
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\">{:.0} s</text>", W - RIGHT - 40.0, H - 8.0, x_max);
    svg.push_str("</svg>\n");
    let legend = "blue: the new version; purple: the live version; dashed red: the threshold";
    let _ = writeln!(svg, "<figcaption>{} ({legend})</figcaption></figure>", escape(title));
    svg
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_subset_becomes_html_and_text_is_escaped() {
        let html = to_html(
            "# Title <x>\n\n| a | b \\| c |\n| --- | --- |\n| **1** | `2` |\n\n- one\n- two\n\n> note\n\n```json\n{\"a\": \"<b>\"}\n```\n",
        );
        assert!(html.contains("<h1>Title &lt;x&gt;</h1>"), "{html}");
        assert!(html.contains("<th>b | c</th>"), "{html}");
        assert!(html.contains("<td><strong>1</strong></td><td><code>2</code></td>"), "{html}");
        assert!(html.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"), "{html}");
        assert!(html.contains("<blockquote><p>note</p></blockquote>"), "{html}");
        assert!(html.contains("{&quot;a&quot;: &quot;&lt;b&gt;&quot;}"), "{html}");
    }

    #[test]
    fn a_chart_draws_its_lines_limits_and_phases() {
        let svg =
            chart("t", &[("new", vec![(0.0, 1.0), (10.0, 2.0)])], &[("limit", 5.0)], &[(0.0, "shadow".into())], "ms");
        assert!(svg.contains("<polyline class=\"new\""), "{svg}");
        assert!(svg.contains("class=\"limit\""), "{svg}");
        assert!(svg.contains(">shadow</text>"), "{svg}");
        assert!(!svg.contains("http"), "no namespace or reference outside the page: {svg}");
    }
}
