//! The drill report: a table for the terminal, JSON for tools, JUnit XML for CI and an HTML page
//! with a timeline per scenario for the SOC. All four come from the same [`Report`].

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde::Serialize;

use super::outcome::{Mode, ScenarioResult, TierCounts, tier_name};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenarios: usize,
    pub passed: usize,
    pub failed: usize,
    pub attacks: usize,
    pub detected: usize,
    pub missed: Vec<String>,
    pub benign: usize,
    /// Benign runs that reached containment.
    pub benign_contained: Vec<String>,
    /// Findings over the benign runs, per tier.
    pub false_positives: TierCounts,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub created: String,
    pub agent_monitor_version: &'static str,
    pub summary: Summary,
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    /// `errors`: scenarios that could not be run at all (name, error).
    pub fn new(mode: Mode, scenarios: Vec<ScenarioResult>, errors: Vec<(String, String)>) -> Self {
        let attacks: Vec<&ScenarioResult> =
            scenarios.iter().filter(|s| s.kind == "attack").collect();
        let benign: Vec<&ScenarioResult> =
            scenarios.iter().filter(|s| s.kind == "benign").collect();
        let mut fp = TierCounts::default();
        for b in &benign {
            fp.sum(&b.false_positives);
        }
        let passed = scenarios.iter().filter(|s| s.passed).count();
        let summary = Summary {
            scenarios: scenarios.len() + errors.len(),
            passed,
            failed: scenarios.len() - passed + errors.len(),
            attacks: attacks.len(),
            detected: attacks.iter().filter(|s| s.detected).count(),
            missed: attacks
                .iter()
                .filter(|s| !s.detected)
                .map(|s| s.name.clone())
                .collect(),
            benign: benign.len(),
            benign_contained: benign
                .iter()
                .filter(|s| s.tier == Some(crate::detect::Tier::Contain))
                .map(|s| s.name.clone())
                .collect(),
            false_positives: fp,
            errors: errors.iter().map(|(n, e)| format!("{n}: {e}")).collect(),
        };
        Self {
            mode,
            created: crate::respond::state::now_rfc3339(),
            agent_monitor_version: env!("CARGO_PKG_VERSION"),
            summary,
            scenarios,
        }
    }

    /// Whether CI may pass: every scenario ran and met its expectation.
    pub fn ok(&self) -> bool {
        self.summary.failed == 0
    }

    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let yn = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let mut rows = vec![[
            "scenario".to_owned(),
            "class".into(),
            "result".into(),
            "detected".into(),
            "tier".into(),
            "detector".into(),
            "detect ms".into(),
            "contain ms".into(),
            "actions".into(),
            "held".into(),
            "released".into(),
        ]];
        for s in &self.scenarios {
            let mut actions: Vec<&str> = s
                .actions
                .iter()
                .filter(|a| a.ok)
                .map(|a| a.action.as_str())
                .collect();
            actions.dedup();
            rows.push([
                s.name.clone(),
                s.class.clone(),
                if s.passed {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
                if s.kind == "benign" {
                    format!(
                        "benign fp {}/{}/{}",
                        s.false_positives.log,
                        s.false_positives.rate_limit,
                        s.false_positives.contain
                    )
                } else if s.detected {
                    "yes".into()
                } else {
                    "MISSED".into()
                },
                s.tier.map_or("-".into(), tier_name),
                s.detectors.first().cloned().unwrap_or_else(|| "-".into()),
                ms(s.time_to_detect_ms),
                ms(s.time_to_contain_ms),
                if actions.is_empty() {
                    "-".into()
                } else {
                    actions.join(",")
                },
                yn(s.containment_held).into(),
                yn(s.release_verified).into(),
            ]);
        }
        let mut widths = [0usize; 11];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} mode: {} scenarios, {} passed, {} failed; attacks detected {}/{}{}; benign runs {} \
             (false-positive findings log {}, rate_limit {}, contain {}; contained: {})",
            self.mode,
            s.scenarios,
            s.passed,
            s.failed,
            s.detected,
            s.attacks,
            if s.missed.is_empty() {
                String::new()
            } else {
                format!(" (missed: {})", s.missed.join(", "))
            },
            s.benign,
            s.false_positives.log,
            s.false_positives.rate_limit,
            s.false_positives.contain,
            if s.benign_contained.is_empty() {
                "none".into()
            } else {
                s.benign_contained.join(", ")
            },
        );
        for sc in self.scenarios.iter().filter(|s| !s.passed) {
            let _ = writeln!(out, "FAIL {}: {}", sc.name, sc.failures.join("; "));
        }
        for e in &s.errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        out
    }

    pub fn junit(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"agent-monitor drills\" tests=\"{}\" failures=\"{}\">",
            self.summary.scenarios, self.summary.failed
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"drills-{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" timestamp=\"{}\">",
            self.mode,
            self.summary.scenarios,
            self.summary.failed - self.summary.errors.len(),
            self.summary.errors.len(),
            esc(&self.created)
        );
        for s in &self.scenarios {
            let time = s.time_to_contain_ms.or(s.time_to_detect_ms).unwrap_or(0.0) / 1000.0;
            let _ = writeln!(
                x,
                "    <testcase classname=\"drills.{}.{}\" name=\"{}\" time=\"{:.3}\">",
                self.mode,
                esc(&s.class),
                esc(&s.name),
                time.max(0.0)
            );
            if !s.passed {
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\">{}</failure>",
                    esc(s.failures.first().map_or("", String::as_str)),
                    esc(&s.failures.join("\n"))
                );
            }
            let _ = writeln!(
                x,
                "      <system-out>{}</system-out>",
                esc(&format!(
                    "mitre {}; detected {}; detectors {}; tier {}; detect {} ms; contain {} ms; \
                     actions {}; held {}; release verified {}; false positives log/rate_limit/contain \
                     {}/{}/{}\n{}",
                    s.mitre.join(","),
                    s.detected,
                    s.detectors.join(","),
                    s.tier.map_or("-".into(), tier_name),
                    s.time_to_detect_ms
                        .map_or("-".into(), |v| format!("{v:.1}")),
                    s.time_to_contain_ms
                        .map_or("-".into(), |v| format!("{v:.1}")),
                    s.actions
                        .iter()
                        .map(|a| a.action.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    yes_no(s.containment_held),
                    yes_no(s.release_verified),
                    s.false_positives.log,
                    s.false_positives.rate_limit,
                    s.false_positives.contain,
                    s.notes.join("\n")
                ))
            );
            x.push_str("    </testcase>\n");
        }
        for e in &self.summary.errors {
            let name = e.split(':').next().unwrap_or(e);
            let _ = writeln!(
                x,
                "    <testcase classname=\"drills.{}\" name=\"{}\">\n      <error message=\"{}\"/>\n    </testcase>",
                self.mode,
                esc(name),
                esc(e)
            );
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }

    pub fn html(&self) -> String {
        let mut h = String::new();
        let s = &self.summary;
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>agent-monitor drills ({mode})</title><style>\
             body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}}\
             .pass{{color:#176f2c}}.fail{{color:#b00020;font-weight:bold}}\
             .tl td{{font-family:monospace;font-size:12px;border:none;padding:1px 6px}}\
             .attack{{color:#b00020}}.monitor{{color:#0b57d0;font-weight:bold}}.agent{{color:#666}}\
             details{{margin:1em 0}}summary{{cursor:pointer;font-size:16px}}\
             </style></head><body>\n<h1>agent-monitor drills: {mode} mode</h1>\n\
             <p>{created}, agent-monitor {ver}. {n} scenarios, {p} passed, {f} failed. Attacks \
             detected {d} of {a}. Benign runs {b}: false-positive findings log {fl}, rate_limit \
             {fr}, contain {fc}; contained: {bc}.</p>\n",
            mode = self.mode,
            created = esc(&self.created),
            ver = self.agent_monitor_version,
            n = s.scenarios,
            p = s.passed,
            f = s.failed,
            d = s.detected,
            a = s.attacks,
            b = s.benign,
            fl = s.false_positives.log,
            fr = s.false_positives.rate_limit,
            fc = s.false_positives.contain,
            bc = if s.benign_contained.is_empty() {
                "none".into()
            } else {
                esc(&s.benign_contained.join(", "))
            },
        );
        h.push_str("<table><tr><th>scenario</th><th>ATT&amp;CK</th><th>class</th><th>result</th><th>detected</th><th>tier</th><th>detectors</th><th>detect ms</th><th>contain ms</th><th>actions</th><th>held</th><th>release verified</th></tr>\n");
        for sc in &self.scenarios {
            let _ = writeln!(
                h,
                "<tr><td><a href=\"#{n}\">{n}</a></td><td>{m}</td><td>{c}</td><td class=\"{rc}\">{r}</td><td>{d}</td><td>{t}</td><td>{det}</td><td>{td}</td><td>{tc}</td><td>{act}</td><td>{held}</td><td>{rel}</td></tr>",
                n = esc(&sc.name),
                m = esc(&sc.mitre.join(", ")),
                c = esc(&sc.class),
                rc = if sc.passed { "pass" } else { "fail" },
                r = if sc.passed { "pass" } else { "FAIL" },
                d = if sc.kind == "benign" {
                    "benign".into()
                } else {
                    sc.detected.to_string()
                },
                t = sc.tier.map_or("-".into(), tier_name),
                det = esc(&sc.detectors.join(", ")),
                td = sc
                    .time_to_detect_ms
                    .map_or("-".into(), |v| format!("{v:.1}")),
                tc = sc
                    .time_to_contain_ms
                    .map_or("-".into(), |v| format!("{v:.1}")),
                act = esc(&sc
                    .actions
                    .iter()
                    .map(|a| a.action.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")),
                held = sc.containment_held.map_or("-".into(), |v| v.to_string()),
                rel = sc.release_verified.map_or("-".into(), |v| v.to_string()),
            );
        }
        h.push_str("</table>\n");
        for sc in &self.scenarios {
            let _ = write!(
                h,
                "<details id=\"{n}\"{open}><summary>{n} ({kind}, {class}) <span class=\"{rc}\">{r}</span></summary>\
                 <p>{desc}</p>",
                n = esc(&sc.name),
                open = if sc.passed { "" } else { " open" },
                kind = sc.kind,
                class = esc(&sc.class),
                rc = if sc.passed { "pass" } else { "fail" },
                r = if sc.passed { "pass" } else { "FAIL" },
                desc = esc(&sc.description),
            );
            for f in &sc.failures {
                let _ = write!(h, "<p class=\"fail\">{}</p>", esc(f));
            }
            for n in &sc.notes {
                let _ = write!(h, "<p>{}</p>", esc(n));
            }
            h.push_str(
                "<table class=\"tl\"><tr><th>t (ms)</th><th>what</th><th>who</th><th></th></tr>",
            );
            for e in &sc.timeline {
                let _ = write!(
                    h,
                    "<tr class=\"{a}\"><td>{t:+.1}</td><td>{w}</td><td>{a}</td><td>{x}</td></tr>",
                    a = e.actor,
                    t = e.t_ms,
                    w = e.what,
                    x = esc(&e.text)
                );
            }
            h.push_str("</table></details>\n");
        }
        h.push_str("</body></html>\n");
        h
    }

    /// Writes `report.json`, `junit.xml` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
        };
        write("report.json", serde_json::to_string_pretty(self)? + "\n")?;
        write("junit.xml", self.junit())?;
        write("report.html", self.html())?;
        Ok(())
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// Escapes text for XML and HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_out() {
        assert_eq!(esc("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;?");
    }
}
