//! The Markdown report (`<timestamp>.md` and `latest.md`) and its JSON twin.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::runner::{Results, SCENARIOS};

fn fmt_val(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// Renders the report.
#[must_use]
pub fn render(r: &Results, chart: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# vwire benchmark {}\n", r.started);
    let _ = writeln!(
        s,
        "Mode **{}**: median of {} repetition(s), each a round over every device in turn, \
         {} s per rate measurement. Invocation: `{}`\n",
        r.mode, r.reps, r.duration_s, r.invocation
    );
    let _ = writeln!(s, "## Machine\n");
    for (k, v) in &r.machine {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(
        s,
        "\nTopology: one node namespace holding the device under test and the host ends `p0..p4` of five \
         single-queue veth pairs; five client namespaces with `nsm-1` (TX checksum offload off, GRO on, IPv6 off). \
         `flood8` alone runs on a fresh nine-client topology (`p0..p8`, the device restarted on it). \
         The generator (`vwire-bench gen`, AF_PACKET TX ring, qdisc bypass, one process) sends from client 0; \
         sinks (`vwire-bench sink`, AF_PACKET RX ring) count in the receiving clients. Delivered rate = frames \
         counted at the sink / the generator's sending time. `ndr64`: highest offered rate (`gen --rate`) \
         losing at most 0.1%, by binary search between 20 kpps and the flat-out rate (1 s trials and 4 \
         steps in short mode, 2 s and 6 steps in full mode). Nothing is pinned.\n"
    );
    let _ = writeln!(s, "## Results (medians)\n");
    let mut hdr = "| scenario | unit |".to_owned();
    let mut sep = "| --- | --- |".to_owned();
    for d in &r.duts {
        let _ = write!(hdr, " {d} |");
        sep.push_str(" ---: |");
    }
    // Ratio columns: vwire over each other device in the run.
    let others: Vec<&String> = if r.duts.iter().any(|d| d == "vwire") {
        r.duts.iter().filter(|d| *d != "vwire").collect()
    } else {
        Vec::new()
    };
    for o in &others {
        let _ = write!(hdr, " vwire / {o} |");
        sep.push_str(" ---: |");
    }
    let _ = writeln!(s, "{hdr}\n{sep}");
    for sc in SCENARIOS {
        let vals: Vec<Option<f64>> = r.duts.iter().map(|d| r.median(d, sc.key)).collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(s, "| {} | {} |", sc.label, sc.unit);
        for v in &vals {
            let _ = write!(s, " {} |", fmt_val(*v));
        }
        for o in &others {
            // A ratio of loss percentages says nothing (0.02 % against 29 % is "1600x").
            let comparable = sc.unit != "%";
            let ratio = match (r.median("vwire", sc.key), r.median(o, sc.key)) {
                (Some(v), Some(l)) if comparable && l.abs() > 1e-9 => format!("{:.2}x", v / l),
                _ => "n/a".to_owned(),
            };
            let _ = write!(s, " {ratio} |");
        }
        s.push('\n');
    }
    if let Some(c) = chart {
        let _ = writeln!(s, "\n![delivered kpps by frame size]({c})");
    }
    let _ = writeln!(s, "\n## Every run\n\n| device | scenario | rep | value | detail |\n| --- | --- | ---: | ---: | --- |");
    for x in &r.samples {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            x.dut,
            x.key,
            x.rep,
            fmt_val(Some(x.value)),
            x.detail
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "\n## Commands (in order, repeats left out)\n\n```");
    let mut seen = HashSet::new();
    for c in &r.commands {
        if seen.insert(c.as_str()) {
            let _ = writeln!(s, "{c}");
        }
    }
    let _ = writeln!(s, "```");
    s
}

/// Writes `<started>.md`, `<started>.json`, `<started>.png` and the `latest.*` copies into `out`.
pub fn write(r: &Results, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out)?;
    let png = out.join(format!("{}.png", r.started));
    let chart = match crate::chart::draw(r, &png) {
        Ok(()) => {
            std::fs::copy(&png, out.join("latest.png"))?;
            Some(format!("{}.png", r.started))
        }
        Err(e) => {
            eprintln!("chart not drawn: {e:#}");
            None
        }
    };
    let md = out.join(format!("{}.md", r.started));
    std::fs::write(&md, render(r, chart.as_deref()))?;
    let latest = out.join("latest.md");
    std::fs::write(&latest, render(r, chart.as_ref().map(|_| "latest.png")))?;
    std::fs::write(
        out.join(format!("{}.json", r.started)),
        serde_json::to_string_pretty(r)?,
    )?;
    Ok((md, latest))
}
