//! `vwire-bench run`: every scenario on every device under test, on a fresh topology each,
//! then the report. Measures; asserts nothing about timing.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    frame,
    gen::GenReport,
    report,
    sink::SinkReport,
    topo::{self, in_ns, ChildGuard, Client, CmdLog, Dut, DutKind, Topology},
    wake::WakeCost,
};

/// Options of the runner.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// CI smoke mode: one repetition, 2 s per measurement.
    #[arg(long, conflicts_with = "full")]
    pub short: bool,
    /// Full mode (the default): three repetitions, 5 s per measurement.
    #[arg(long)]
    pub full: bool,
    /// The vwire daemon binary.
    #[arg(long, default_value = "target/release/vwire")]
    pub vwire: PathBuf,
    /// Directory for `<timestamp>.md`, `latest.md` and the charts.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Override seconds per measurement.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override repetitions per measurement.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Only these devices (comma-separated: linux-bridge,vwire,ovs-afxdp).
    #[arg(long, value_delimiter = ',')]
    pub dut: Option<Vec<String>>,
    /// Only these scenarios (comma-separated keys, e.g. rate64,ping).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Passed to vwire's config as `spin_us`.
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// Extra top-level lines for vwire's config, e.g. `--vwire-set ring_size=8192` (repeatable).
    #[arg(long = "vwire-set", value_name = "KEY=VALUE")]
    pub vwire_set: Vec<String>,
    /// Also measure Open vSwitch's userspace datapath with AF_XDP ports (needs
    /// `ovs-vswitchd`: `apt-get install openvswitch-switch`). Implied by `--dut ovs-afxdp`.
    #[arg(long)]
    pub with_ovs: bool,
}

/// One scenario, as a row of the report.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scenario {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// Every scenario, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "rate64",
        label: "64 B known unicast, delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "rate128",
        label: "128 B known unicast, delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "rate512",
        label: "512 B known unicast, delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "rate1518",
        label: "1518 B known unicast, delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "station64",
        label: "64 B known unicast to a tester station (receiver drops it at L2), delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "woken64",
        label: "64 B known unicast, delivered to a sink woken per batch (no naps)",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "loss64",
        label: "64 B flat out, loss",
        unit: "%",
        higher_is_better: false,
    },
    Scenario {
        key: "cpu64",
        label: "forwarder CPU during 64 B flat out",
        unit: "% of a core",
        higher_is_better: false,
    },
    Scenario {
        key: "machine64",
        label:
            "whole machine's CPU per delivered frame, 64 B flat out (device, generator and sink)",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "ndr64",
        label: "64 B no-drop rate (binary search, loss <= 0.1%)",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "owl_p50",
        label: "one-way latency at 10 kpps (64 B), p50",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "owl_p99",
        label: "one-way latency at 10 kpps (64 B), p99",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "ping_p50",
        label: "ping RTT p50 (200 x 10 ms)",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "ping_p99",
        label: "ping RTT p99",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "ping1ms_p50",
        label: "ping RTT p50 (1000 x 1 ms)",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "ping1ms_mid",
        label: "ping RTT 1 ms apart, mean of the middle half (finer than ping's whole us)",
        unit: "us",
        higher_is_better: false,
    },
    Scenario {
        key: "tcp",
        label: "TCP throughput, iperf3 1 stream",
        unit: "Gbit/s",
        higher_is_better: true,
    },
    Scenario {
        key: "tcp_mtu3500",
        label: "TCP throughput, iperf3 1 stream, client MTU 3500",
        unit: "Gbit/s",
        higher_is_better: true,
    },
    Scenario {
        key: "flood4",
        label: "64 B unknown unicast flooded to 4 clients, per client",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "flood8",
        label: "64 B unknown unicast flooded to 8 clients, per client",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "macs64k",
        label: "64 B from 64K source MACs, delivered",
        unit: "kpps",
        higher_is_better: true,
    },
    Scenario {
        key: "fdbcap",
        label: "address caching capacity: stations held of 131,072 taught at 50 kpps (RFC 2889)",
        unit: "stations",
        higher_is_better: true,
    },
    Scenario {
        key: "learnrate",
        label: "address learning rate: highest rate learning all of 32,768 new stations (RFC 2889)",
        unit: "k stations/s",
        higher_is_better: true,
    },
    Scenario {
        key: "idle_cpu",
        label: "forwarder CPU with no traffic",
        unit: "% of a core",
        higher_is_better: false,
    },
    Scenario {
        key: "trafgen64",
        label: "generator check: trafgen --cpus 1, 64 B",
        unit: "kpps",
        higher_is_better: true,
    },
];

/// One measured value.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub dut: String,
    pub key: &'static str,
    pub rep: usize,
    pub value: f64,
    /// Context for the details table (sent rate, loss, latency under load...).
    pub detail: String,
}

/// Everything the report needs.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub started: String,
    pub mode: String,
    pub reps: usize,
    pub duration_s: f64,
    pub duts: Vec<String>,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
    pub commands: Vec<String>,
    pub machine: Vec<(String, String)>,
    pub invocation: String,
}

impl Results {
    /// Median of the samples for (dut, key).
    #[must_use]
    pub fn median(&self, dut: &str, key: &str) -> Option<f64> {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.dut == dut && s.key == key)
            .map(|s| s.value)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
}

struct Ctx<'a> {
    log: &'a CmdLog,
    exe: String,
    duration: f64,
    /// The repetitions measured in this round (see `run`).
    reps: std::ops::Range<usize>,
    /// Repetitions in the whole run.
    total_reps: usize,
    short: bool,
    only: Option<Vec<String>>,
}

impl Ctx<'_> {
    fn wants(&self, key: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|k| k == key))
    }
}

/// What one generator run delivered.
struct RateOutcome {
    gen: GenReport,
    sinks: Vec<SinkReport>,
    cpu_pct: Option<f64>,
    /// CPUs the whole machine kept busy while the generator ran: device, generator and sinks.
    machine_cpus: Option<f64>,
    /// How long the generator ran, seconds (start and teardown included).
    wall_s: f64,
    /// What the counters say was lost during the run, by reason (`Dut::losses`).
    dut_losses: Vec<(String, u64)>,
}

impl RateOutcome {
    /// Mean delivered rate per receiver, kpps (over the generator's sending time).
    fn kpps(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let total: f64 = self.sinks.iter().map(|s| s.frames as f64).sum();
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let n = self.sinks.len().max(1) as f64;
        total / n / self.gen.duration_s.max(1e-9) / 1000.0
    }

    /// Microseconds of the whole machine's CPU per frame the sinks counted. With everything
    /// on one host the tester is in it too, for every device alike; what it shows is what a
    /// device's path costs per frame, whichever CPU runs it.
    fn machine_us_per_frame(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let delivered = self.sinks.iter().map(|s| s.frames as f64).sum::<f64>();
        self.machine_cpus
            .filter(|_| delivered > 0.0)
            .map(|cpus| cpus * self.wall_s / delivered * 1e6)
    }

    fn loss_pct(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let sent = self.gen.frames_sent.max(1) as f64;
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let got: f64 = self.sinks.iter().map(|s| s.frames as f64).sum::<f64>()
            / self.sinks.len().max(1) as f64;
        ((sent - got) / sent * 100.0).max(0.0)
    }

    fn detail(&self) -> String {
        let s0 = self.sinks.first().cloned().unwrap_or_default();
        let cpu = self
            .cpu_pct
            .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0}%"));
        let machine = self
            .machine_cpus
            .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2} CPUs"));
        // Frames the sinks' own rings had no room for: lost at the receiver, not the device.
        let sink_drops: u64 = self.sinks.iter().map(|s| s.ring_drops).sum();
        let mut dut_losses = String::new();
        for (i, (reason, n)) in self.dut_losses.iter().enumerate() {
            dut_losses += if i == 0 { "; counted: " } else { ", " };
            dut_losses += &format!("{n} {reason}");
        }
        format!(
            "sent {:.0} kpps ({} frames), loss {:.2}% (sink ring drops {sink_drops}{dut_losses}), one-way p50 {:.0} us p99 {:.0} us, fwd CPU {cpu}, machine busy {machine}",
            self.gen.pps / 1000.0,
            self.gen.frames_sent,
            self.loss_pct(),
            s0.latency_p50_us,
            s0.latency_p99_us
        )
    }
}

struct GenOpts<'a> {
    /// The sending client.
    from: usize,
    size: usize,
    dst_mac: &'a str,
    dst_macs: Option<u32>,
    rate: Option<u64>,
    /// `None`: the sending client's own.
    src_mac: Option<&'a str>,
    src_macs: Option<u32>,
    /// Stop after this many frames.
    count: Option<u64>,
    /// Seconds of traffic; `None`: the run's per-measurement duration.
    duration: Option<f64>,
    /// The sinks wait in `poll` to be woken, as a receiving application does (latency rows,
    /// `woken64`); otherwise they nap between batches (see [`SINK_NAP_US`]).
    sink_woken: bool,
}

impl<'a> GenOpts<'a> {
    /// `size`-byte frames to `dst_mac` from client 0's MAC, flat out, for the run's duration.
    fn flat_out(size: usize, dst_mac: &'a str) -> Self {
        Self {
            from: 0,
            size,
            dst_mac,
            dst_macs: None,
            rate: None,
            src_mac: None,
            src_macs: None,
            count: None,
            duration: None,
            sink_woken: false,
        }
    }
}

/// How long a throughput row's sink sleeps when its ring is empty, instead of waiting in
/// `poll` to be woken. The wakeup runs inside whatever transmits to the sink (the bridge's
/// path on the generator's CPU, vwire's forwarder's `sendto`, OVS's poll thread), once per
/// batch the sink drains, so the device under test would pay for the tester: RFC 2544's
/// tester absorbs frames without loading the device. 200 us is 240 frames at 1.2 Mpps,
/// against a ring of 16384. `woken64` keeps the wakeup, to show what a receiving
/// application that sleeps costs each device.
const SINK_NAP_US: u32 = 200;

/// Starts a sink in client `c` for `secs` of traffic (it stops 0.7 s after the last test
/// frame), napping between batches unless `woken`.
fn start_sink(ctx: &Ctx<'_>, c: &Client, secs: f64, woken: bool) -> anyhow::Result<ChildGuard> {
    let nap_us = if woken { 0 } else { SINK_NAP_US };
    let args = in_ns(
        &c.ns,
        &[
            &ctx.exe,
            "sink",
            "--dev",
            &c.dev,
            "--duration",
            &format!("{}", secs + 4.0),
            "--idle-exit",
            "0.7",
            "--nap-us",
            &nap_us.to_string(),
        ],
    );
    topo::spawn_piped(ctx.log, &args, false)
}

/// Sends `o` from its client while a sink in each client of `receivers` counts what
/// arrives (none: the frames only teach the device something).
fn rate_test(
    ctx: &Ctx<'_>,
    topo: &Topology,
    dut: &Dut,
    o: &GenOpts<'_>,
    receivers: &[usize],
) -> anyhow::Result<RateOutcome> {
    let d = o.duration.unwrap_or(ctx.duration);
    let mut sinks = Vec::new();
    for &r in receivers {
        sinks.push(start_sink(ctx, &topo.clients[r], d, o.sink_woken)?);
    }
    if !sinks.is_empty() {
        std::thread::sleep(Duration::from_millis(400));
    }
    let sender = &topo.clients[o.from];
    let size = o.size.to_string();
    let dur = format!("{d}");
    let mut g: Vec<String> = in_ns(
        &sender.ns,
        &[
            &ctx.exe,
            "gen",
            "--dev",
            &sender.dev,
            "--src-mac",
            o.src_mac.unwrap_or(&sender.mac),
            "--dst-mac",
            o.dst_mac,
            "--src-ip",
            &sender.ip,
            "--size",
            &size,
            "--duration",
            &dur,
        ],
    );
    if let Some(r) = o.rate {
        g.extend(["--rate".to_owned(), r.to_string()]);
    }
    if let Some(m) = o.src_macs {
        g.extend(["--src-macs".to_owned(), m.to_string()]);
    }
    if let Some(m) = o.dst_macs {
        g.extend(["--dst-macs".to_owned(), m.to_string()]);
    }
    if let Some(n) = o.count {
        g.extend(["--count".to_owned(), n.to_string()]);
    }
    let pid = dut.pid();
    let losses0 = dut.losses(topo);
    let cpu0 = pid.and_then(|p| topo::cpu_seconds(p).ok());
    let machine0 = topo::MachineCpu::now().ok();
    let t0 = Instant::now();
    let out = topo::run(ctx.log, &g)?;
    let wall = t0.elapsed().as_secs_f64();
    let machine1 = topo::MachineCpu::now().ok();
    let cpu1 = pid.and_then(|p| topo::cpu_seconds(p).ok());
    let gen: GenReport =
        serde_json::from_str(out.trim()).with_context(|| format!("gen output {out:?}"))?;
    let mut reports = Vec::new();
    for s in &mut sinks {
        let out = s.wait_output(Duration::from_secs_f64(d + 10.0))?;
        reports.push(
            serde_json::from_str(out.trim()).with_context(|| format!("sink output {out:?}"))?,
        );
    }
    let cpu_pct = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) / wall * 100.0),
        _ => None,
    };
    // After the sinks: frames still in flight when the generator stopped are counted.
    let dut_losses = topo::losses_between(&losses0, &dut.losses(topo));
    let machine_cpus = machine0
        .zip(machine1)
        .and_then(|(a, b)| b.busy_cpus_since(&a));
    Ok(RateOutcome {
        gen,
        sinks: reports,
        cpu_pct,
        machine_cpus,
        wall_s: wall,
        dut_losses,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "index within len"
    )]
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Mean of the middle half of sorted samples: as robust as the median, but with ping's whole
/// microseconds averaged into a finer value (a p50 of 3 or 4 us says little about 3.4 vs 3.6).
fn middle_half_mean(sorted: &[f64]) -> f64 {
    let (lo, hi) = (sorted.len() / 4, sorted.len() - sorted.len() / 4);
    let mid = &sorted[lo..hi];
    #[allow(clippy::cast_precision_loss, reason = "a few thousand samples")]
    let n = mid.len() as f64;
    mid.iter().sum::<f64>() / n
}

/// Ping RTTs in microseconds, sorted: `count` pings `interval` seconds apart.
fn ping(ctx: &Ctx<'_>, topo: &Topology, count: u32, interval: &str) -> anyhow::Result<Vec<f64>> {
    let c0 = &topo.clients[0];
    let out = topo::run(
        ctx.log,
        &in_ns(
            &c0.ns,
            &[
                "ping",
                "-n",
                "-i",
                interval,
                "-c",
                &count.to_string(),
                "-W",
                "1",
                &topo.clients[1].ip,
            ],
        ),
    )?;
    let mut v: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    anyhow::ensure!(!v.is_empty(), "ping got no replies");
    Ok(v)
}

fn iperf(ctx: &Ctx<'_>, topo: &Topology) -> anyhow::Result<f64> {
    let (c0, c1) = (&topo.clients[0], &topo.clients[1]);
    let mut server = topo::spawn_piped(
        ctx.log,
        &in_ns(&c1.ns, &["iperf3", "-s", "-1", "-p", "5201"]),
        false,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let t = format!("{}", ctx.duration.ceil().max(1.0));
    let out = topo::run(
        ctx.log,
        &in_ns(
            &c0.ns,
            &["iperf3", "-c", &c1.ip, "-p", "5201", "-t", &t, "-J"],
        ),
    );
    server.stop(libc::SIGTERM, Duration::from_secs(2));
    let v: serde_json::Value = serde_json::from_str(&out?)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}

fn trafgen(ctx: &Ctx<'_>, topo: &Topology, workdir: &std::path::Path) -> anyhow::Result<f64> {
    let (c0, c1) = (&topo.clients[0], &topo.clients[1]);
    let tpl = frame::build(&frame::FrameSpec {
        dst_mac: frame::parse_mac(&c1.mac)?,
        src_mac: frame::parse_mac(&c0.mac)?,
        src_ip: c0.ip.parse()?,
        dst_ip: "10.77.0.250".parse()?,
        size: 64,
        vlan: None,
    })?;
    let body: Vec<String> = tpl.bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    let conf = workdir.join("trafgen.cfg");
    std::fs::write(&conf, format!("{{ {} }}\n", body.join(", ")))?;
    let mut sink = start_sink(ctx, c1, ctx.duration, false)?;
    std::thread::sleep(Duration::from_millis(400));
    // trafgen forks per CPU and `timeout` would kill only the parent: own process group.
    let mut tg = topo::spawn_piped(
        ctx.log,
        &in_ns(
            &c0.ns,
            &[
                "trafgen",
                "--dev",
                &c0.dev,
                "--conf",
                &conf.to_string_lossy(),
                "--cpus",
                "1",
                "-q",
            ],
        ),
        true,
    )?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(ctx.duration));
    tg.stop(libc::SIGINT, Duration::from_secs(2));
    let secs = t0.elapsed().as_secs_f64();
    let rep: SinkReport = serde_json::from_str(
        sink.wait_output(Duration::from_secs_f64(ctx.duration + 10.0))?
            .trim(),
    )?;
    #[allow(clippy::cast_precision_loss, reason = "reporting only")]
    Ok(rep.frames as f64 / secs / 1000.0)
}

/// RFC 2544's search for the highest offered rate a device passes at: one trial flat out
/// (the upper bound, and the answer if it passes), then `iterations` halvings between
/// `low_pps` and that rate, then the lower bound itself if nothing passed. `trial(rate)`
/// (frames per second, `None`: flat out) returns the rate it offered, whether it passed and
/// what it measured.
/// Returns the highest passing offered rate (`None`: not even the lower bound) and a line
/// per trial for the details table.
fn search_highest_rate(
    low_pps: f64,
    iterations: u32,
    mut trial: impl FnMut(Option<u64>) -> anyhow::Result<(f64, bool, String)>,
) -> anyhow::Result<(Option<f64>, Vec<String>)> {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive rate in frames per second"
    )]
    let mut trial = |rate: Option<f64>| trial(rate.map(|r| r.round() as u64));
    let verdict = |ok: bool| if ok { "pass" } else { "fail" };
    let mut log = Vec::new();
    let (offered, ok, what) = trial(None)?;
    log.push(format!(
        "flat out {:.0} kpps: {what} {}",
        offered / 1000.0,
        verdict(ok)
    ));
    if ok {
        log.push("passes flat out: the generator, not the device, is the limit".to_owned());
        return Ok((Some(offered), log));
    }
    let (mut lo, mut hi) = (low_pps.min(offered / 2.0), offered);
    let mut best: Option<f64> = None;
    for _ in 0..iterations {
        let mid = f64::midpoint(lo, hi);
        let (offered, ok, what) = trial(Some(mid))?;
        log.push(format!(
            "{:.0} kpps: {what} {}",
            offered / 1000.0,
            verdict(ok)
        ));
        if ok {
            best = Some(best.map_or(offered, |b: f64| b.max(offered)));
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if best.is_none() {
        let (offered, ok, what) = trial(Some(lo))?;
        log.push(format!(
            "{:.0} kpps: {what} {}",
            offered / 1000.0,
            if ok {
                "pass"
            } else {
                "fail (below the search range)"
            }
        ));
        best = ok.then_some(offered);
    }
    Ok((best, log))
}

/// Loss tolerance of the no-drop-rate search, percent of the offered frames.
const NDR_LOSS_PCT: f64 = 0.1;
/// Lower bound of the rate searches, frames per second.
const SEARCH_LOW_PPS: f64 = 20_000.0;

/// Trials and halvings of a rate search: 1 s and 4 in short mode, 2 s and 6 in full mode.
fn search_plan(ctx: &Ctx<'_>) -> (f64, u32) {
    if ctx.short {
        (1.0, 4)
    } else {
        (2.0, 6)
    }
}

/// RFC 2544-style no-drop rate of 64-byte known unicast, client 0 to client 1: the highest
/// offered rate losing at most 0.1 % ([`search_highest_rate`]). Returns (kpps, the trials).
fn ndr(ctx: &Ctx<'_>, topo: &Topology, dut: &Dut, dst_mac: &str) -> anyhow::Result<(f64, String)> {
    let (trial_s, iterations) = search_plan(ctx);
    let (best, log) = search_highest_rate(SEARCH_LOW_PPS, iterations, |rate| {
        let o = GenOpts {
            rate,
            duration: Some(trial_s),
            ..GenOpts::flat_out(64, dst_mac)
        };
        let r = rate_test(ctx, topo, dut, &o, &[1])?;
        let loss = r.loss_pct();
        Ok((r.gen.pps, loss <= NDR_LOSS_PCT, format!("loss {loss:.3}%")))
    })?;
    Ok((best.unwrap_or(0.0) / 1000.0, log.join("; ")))
}

/// Stations one port may hold, for every device that limits it: vwire's
/// `max_macs_per_port` (4096 by default, port security for pods) and Open vSwitch's
/// `mac-table-size` (2048 by default), so that the learning rows measure tables, not
/// defaults. The Linux bridge has no limit.
pub const BENCH_STATIONS_PER_PORT: u32 = 65_536;

/// First of the stations the learning scenarios teach the device (RFC 2889's learning
/// frames): one address per frame, counting up in the low three bytes.
const LEARN_MAC: &str = "02:76:79:00:00:00";
/// Stations offered by `fdbcap`: twice 64K, so that a table of 64K shows as one.
const CAPACITY_STATIONS: u32 = 131_072;
/// Stations per trial of `learnrate`: fewer than a 64K table holds besides the clients.
const LEARN_RATE_STATIONS: u32 = 32_768;
/// The learning rate of `fdbcap` and the rate of every verification: slow enough for every
/// device to forward all of it, so that what is missing was not learned rather than lost.
const SLOW_PPS: u64 = 50_000;

/// What one learn-then-verify trial found.
struct Learned {
    stations: u32,
    /// The learning frames' offered rate, frames per second.
    learn_pps: f64,
    /// Verification frames flooded to the monitor: stations the device did not hold.
    flooded: u64,
    /// Verification frames that reached the learning port (learned or flooded).
    delivered: u64,
}

impl Learned {
    fn held(&self) -> u64 {
        u64::from(self.stations).saturating_sub(self.flooded)
    }

    /// Verification frames lost on the way: if any, a missing flood could be a loss too.
    fn lost(&self) -> u64 {
        u64::from(self.stations).saturating_sub(self.delivered)
    }

    fn detail(&self) -> String {
        format!(
            "held {} of {} stations taught at {:.0} kpps; verification: {} of {} at the learning port, {} flooded to the monitor{}",
            self.held(),
            self.stations,
            self.learn_pps / 1000.0,
            self.delivered,
            self.stations,
            self.flooded,
            if self.lost() > 0 { " (frames lost: the count of held stations is an upper bound)" } else { "" }
        )
    }
}

/// RFC 2889's learn-then-verify, on a three-client topology: client 0 sends one frame from
/// each of `stations` new addresses to client 1, at `rate` (`None`: flat out); then client 1
/// sends one frame to each of them at [`SLOW_PPS`]. A held station's frame goes to client 0
/// alone, a forgotten one's is flooded, so client 2, the monitor, counts what the device
/// does not hold.
fn learn_and_verify(
    ctx: &Ctx<'_>,
    topo: &Topology,
    dut: &Dut,
    stations: u32,
    rate: Option<u64>,
) -> anyhow::Result<Learned> {
    let c1 = &topo.clients[1];
    #[allow(clippy::cast_precision_loss, reason = "durations")]
    let secs = |pps: u64| f64::from(stations) / pps as f64 + 2.0;
    let teach = GenOpts {
        src_mac: Some(LEARN_MAC),
        src_macs: Some(stations),
        count: Some(u64::from(stations)),
        rate,
        duration: Some(secs(rate.unwrap_or(SLOW_PPS))),
        ..GenOpts::flat_out(64, &c1.mac)
    };
    let taught = rate_test(ctx, topo, dut, &teach, &[])?;
    // Whatever the device still queues is learned before the verification's first frame.
    std::thread::sleep(Duration::from_millis(300));
    let verify = GenOpts {
        from: 1,
        dst_macs: Some(stations),
        count: Some(u64::from(stations)),
        rate: Some(SLOW_PPS),
        duration: Some(secs(SLOW_PPS)),
        ..GenOpts::flat_out(64, LEARN_MAC)
    };
    let v = rate_test(ctx, topo, dut, &verify, &[0, 2])?;
    Ok(Learned {
        stations,
        learn_pps: taught.gen.pps,
        flooded: v.sinks[1].frames,
        delivered: v.sinks[0].frames,
    })
}

/// `fdbcap` and `learnrate` (RFC 2889 address caching capacity and learning rate) on a fresh
/// three-client topology and device, as the FDB's contents are what they measure.
fn learning(ctx: &Ctx<'_>, topo: &Topology, dut: &Dut, res: &mut Results) {
    let name = dut.kind.name();
    for rep in ctx.reps.clone() {
        if ctx.wants("fdbcap") {
            let r = dut
                .flush_fdb(topo, ctx.log)
                .and_then(|()| announce(ctx, &topo.clients[1], &topo.clients[1].mac))
                .and_then(|()| learn_and_verify(ctx, topo, dut, CAPACITY_STATIONS, Some(SLOW_PPS)));
            match r {
                #[allow(clippy::cast_precision_loss, reason = "a count of stations")]
                Ok(l) => push(res, name, "fdbcap", rep, l.held() as f64, l.detail()),
                Err(e) => note_failed(res, name, "fdbcap", &e),
            }
        }
        if ctx.wants("learnrate") {
            let (_, iterations) = search_plan(ctx);
            let searched = search_highest_rate(SEARCH_LOW_PPS, iterations, |rate| {
                dut.flush_fdb(topo, ctx.log)?;
                announce(ctx, &topo.clients[1], &topo.clients[1].mac)?;
                let l = learn_and_verify(ctx, topo, dut, LEARN_RATE_STATIONS, rate)?;
                let all = l.held() == u64::from(l.stations) && l.lost() == 0;
                let what = format!("held {} of {}, {} lost", l.held(), l.stations, l.lost());
                Ok((l.learn_pps, all, what))
            });
            match searched {
                Ok((Some(best), log)) => {
                    push(res, name, "learnrate", rep, best / 1000.0, log.join("; "));
                }
                Ok((None, log)) => res.notes.push(format!(
                    "{name}: learnrate: not all of {LEARN_RATE_STATIONS} stations learned even at {:.0} kpps (see fdbcap for how many it holds): {}",
                    SEARCH_LOW_PPS / 1000.0,
                    log.join("; ")
                )),
                Err(e) => note_failed(res, name, "learnrate", &e),
            }
        }
    }
}

/// A tester's own station behind client 1: frames to it cross the device under test like
/// any known unicast, but the receiving client's kernel drops them on arrival (not its MAC)
/// instead of routing each one, so the measurement leaves out the receiver's IP stack, as
/// RFC 2544 measures the device alone. The sink still counts them (AF_PACKET sees them).
const STATION_MAC: &str = "02:76:77:ee:00:02";

/// Makes the device learn `mac` on client `c`'s port: three broadcasts from it.
fn announce(ctx: &Ctx<'_>, c: &Client, mac: &str) -> anyhow::Result<()> {
    topo::run(
        ctx.log,
        &in_ns(
            &c.ns,
            &[
                &ctx.exe,
                "gen",
                "--dev",
                &c.dev,
                "--src-mac",
                mac,
                "--dst-mac",
                "ff:ff:ff:ff:ff:ff",
                "--count",
                "3",
            ],
        ),
    )
    .map(drop)
}

/// Pings every other client from client 0, so the device under test has learned every MAC
/// and every ARP cache is warm before measuring.
fn prelearn(ctx: &Ctx<'_>, topo: &Topology, name: &str) -> anyhow::Result<()> {
    for c in &topo.clients[1..] {
        topo::run(
            ctx.log,
            &in_ns(
                &topo.clients[0].ns,
                &["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", &c.ip],
            ),
        )
        .with_context(|| format!("{name}: pre-learning ping to {}", c.ip))?;
    }
    Ok(())
}

/// Unknown unicast from client 0, flooded by the device to every other client, each one
/// counting with its own sink. Value: the mean delivered rate per receiving client.
fn flood(ctx: &Ctx<'_>, topo: &Topology, dut: &Dut, key: &'static str, res: &mut Results) {
    let name = dut.kind.name();
    let receivers: Vec<usize> = (1..topo.clients.len()).collect();
    for rep in ctx.reps.clone() {
        let o = GenOpts::flat_out(64, "02:76:77:99:99:99");
        match rate_test(ctx, topo, dut, &o, &receivers) {
            Ok(r) => {
                let per: Vec<String> = r.sinks.iter().map(|s| s.frames.to_string()).collect();
                push(
                    res,
                    name,
                    key,
                    rep,
                    r.kpps(),
                    format!("{}; frames per client {}", r.detail(), per.join("/")),
                );
            }
            Err(e) => note_failed(res, name, key, &e),
        }
    }
}

/// Records that a scenario failed on a device: the run goes on, the report says why.
fn note_failed(res: &mut Results, dut: &str, what: &str, e: &anyhow::Error) {
    let n = format!("{dut}: {what} failed: {e:#}");
    eprintln!("  {n}");
    res.notes.push(n);
}

fn push(res: &mut Results, dut: &str, key: &'static str, rep: usize, value: f64, detail: String) {
    eprintln!("  {dut:<13} {key:<10} rep {rep}: {value:.2} {detail}");
    res.samples.push(Sample {
        dut: dut.to_owned(),
        key,
        rep,
        value,
        detail,
    });
}

/// Runs every scenario on one device; errors of one scenario become notes.
fn bench_dut(
    ctx: &Ctx<'_>,
    kind: &DutKind,
    prefix: &str,
    workdir: &std::path::Path,
    globals: &str,
    res: &mut Results,
) -> anyhow::Result<()> {
    let name = kind.name();
    eprintln!("== {name}");
    let topo = Topology::create(prefix, 5, ctx.log)?;
    let dut = Dut::start(kind, &topo, workdir, ctx.log, globals)?;
    prelearn(ctx, &topo, name)?;
    let c1mac = topo.clients[1].mac.clone();
    let note = |res: &mut Results, what: &str, e: &anyhow::Error| note_failed(res, name, what, e);

    if ctx.wants("idle_cpu") && ctx.reps.start == 0 {
        if let Some(pid) = dut.pid() {
            std::thread::sleep(Duration::from_secs(1));
            let secs = if ctx.total_reps > 1 { 5.0 } else { 2.0 };
            let a = topo::cpu_seconds(pid)?;
            std::thread::sleep(Duration::from_secs_f64(secs));
            let b = topo::cpu_seconds(pid)?;
            push(
                res,
                name,
                "idle_cpu",
                0,
                (b - a) / secs * 100.0,
                format!("utime+stime over {secs} s, no traffic"),
            );
        }
    }
    // The station row is a rate test like the others, once the device knows the station.
    let station_known = ctx.wants("station64")
        && announce(ctx, &topo.clients[1], STATION_MAC)
            .map_err(|e| note(res, "announcing the tester station", &e))
            .is_ok();
    for (key, size, dst_mac) in [
        ("rate64", 64, c1mac.as_str()),
        ("rate128", 128, &c1mac),
        ("rate512", 512, &c1mac),
        ("rate1518", 1518, &c1mac),
        ("station64", 64, STATION_MAC),
        ("woken64", 64, &c1mac),
    ] {
        if !ctx.wants(key) || (key == "station64" && !station_known) {
            continue;
        }
        for rep in ctx.reps.clone() {
            let o = GenOpts {
                sink_woken: key == "woken64",
                ..GenOpts::flat_out(size, dst_mac)
            };
            match rate_test(ctx, &topo, &dut, &o, &[1]) {
                Ok(r) => {
                    push(res, name, key, rep, r.kpps(), r.detail());
                    if key == "rate64" {
                        push(res, name, "loss64", rep, r.loss_pct(), String::new());
                        if let Some(c) = r.cpu_pct {
                            push(res, name, "cpu64", rep, c, String::new());
                        }
                        if let Some(us) = r.machine_us_per_frame() {
                            let busy = r.machine_cpus.unwrap_or_default();
                            push(
                                res,
                                name,
                                "machine64",
                                rep,
                                us,
                                format!("{busy:.2} CPUs busy"),
                            );
                        }
                    }
                }
                Err(e) => note(res, key, &e),
            }
        }
    }
    if ctx.wants("ndr64") {
        for rep in ctx.reps.clone() {
            match ndr(ctx, &topo, &dut, &c1mac) {
                Ok((k, d)) => push(res, name, "ndr64", rep, k, d),
                Err(e) => note(res, "no-drop rate", &e),
            }
        }
    }
    if ctx.wants("owl_p50") {
        for rep in ctx.reps.clone() {
            let o = GenOpts {
                rate: Some(10_000),
                sink_woken: true,
                ..GenOpts::flat_out(64, &c1mac)
            };
            match rate_test(ctx, &topo, &dut, &o, &[1]) {
                Ok(r) => {
                    let s = r.sinks[0].clone();
                    push(res, name, "owl_p50", rep, s.latency_p50_us, r.detail());
                    push(res, name, "owl_p99", rep, s.latency_p99_us, String::new());
                }
                Err(e) => note(res, "one-way latency", &e),
            }
        }
    }
    if ctx.wants("ping_p50") {
        for rep in ctx.reps.clone() {
            match ping(ctx, &topo, 200, "0.01") {
                Ok(v) => {
                    let d = format!("{} replies, min {:.0} us", v.len(), v[0]);
                    push(res, name, "ping_p50", rep, percentile(&v, 0.5), d);
                    push(
                        res,
                        name,
                        "ping_p99",
                        rep,
                        percentile(&v, 0.99),
                        String::new(),
                    );
                }
                Err(e) => note(res, "ping", &e),
            }
        }
    }
    if ctx.wants("ping1ms_p50") || ctx.wants("ping1ms_mid") {
        for rep in ctx.reps.clone() {
            match ping(ctx, &topo, 1000, "0.001") {
                Ok(v) => {
                    let d = format!(
                        "{} replies, min {:.0} us, p99 {:.0} us",
                        v.len(),
                        v[0],
                        percentile(&v, 0.99)
                    );
                    push(res, name, "ping1ms_p50", rep, percentile(&v, 0.5), d);
                    push(
                        res,
                        name,
                        "ping1ms_mid",
                        rep,
                        middle_half_mean(&v),
                        String::new(),
                    );
                }
                Err(e) => note(res, "ping at 1 ms", &e),
            }
        }
    }
    if ctx.wants("tcp") {
        for rep in ctx.reps.clone() {
            match iperf(ctx, &topo) {
                Ok(g) => push(res, name, "tcp", rep, g, String::new()),
                Err(e) => note(res, "iperf3", &e),
            }
        }
    }
    if ctx.wants("flood4") {
        flood(ctx, &topo, &dut, "flood4", res);
    }
    if ctx.wants("trafgen64") && *kind == DutKind::LinuxBridge {
        if which("trafgen") {
            for rep in ctx.reps.clone() {
                match trafgen(ctx, &topo, workdir) {
                    Ok(k) => push(res, name, "trafgen64", rep, k, "sink-counted".to_owned()),
                    Err(e) => note(res, "trafgen", &e),
                }
            }
        } else {
            res.notes
                .push("trafgen not installed: generator check skipped".to_owned());
        }
    }
    // Last: it fills the FDB with 64K entries.
    if ctx.wants("macs64k") {
        for rep in ctx.reps.clone() {
            let o = GenOpts {
                src_mac: Some("02:76:78:00:00:00"),
                src_macs: Some(65_536),
                ..GenOpts::flat_out(64, &c1mac)
            };
            match rate_test(ctx, &topo, &dut, &o, &[1]) {
                Ok(r) => push(res, name, "macs64k", rep, r.kpps(), r.detail()),
                Err(e) => note(res, "64K MACs", &e),
            }
        }
    }
    // Flooding to 8 ports needs 9 clients: a second, bigger topology for that scenario only,
    // so that every other scenario (flood4 included) keeps the 5-port fan-out.
    drop(dut);
    drop(topo);
    if ctx.wants("fdbcap") || ctx.wants("learnrate") {
        let topo = Topology::create(&format!("{prefix}l"), 3, ctx.log)?;
        let dut = Dut::start(kind, &topo, &workdir.join("learning"), ctx.log, globals)?;
        prelearn(ctx, &topo, name)?;
        learning(ctx, &topo, &dut, res);
    }
    if ctx.wants("flood8") {
        let topo = Topology::create(&format!("{prefix}w"), 9, ctx.log)?;
        let dut = Dut::start(kind, &topo, &workdir.join("flood8"), ctx.log, globals)?;
        prelearn(ctx, &topo, name)?;
        flood(ctx, &topo, &dut, "flood8", res);
    }
    // TCP with bigger frames: both ends of both wires at MTU 3500 (the most XDP takes on a veth
    // without frags); vwire needs 4096-byte UMEM frames for it. OVS is left out: its AF_XDP
    // ports would need their own MTU setup.
    if ctx.wants("tcp_mtu3500") && *kind != DutKind::OvsAfxdp {
        let topo = Topology::create(&format!("{prefix}j"), 2, ctx.log)?;
        topo.set_mtu(3500)?;
        let globals = format!("{globals}frame_size = 4096\numem_frames = 16384\n");
        let _dut = Dut::start(kind, &topo, &workdir.join("mtu3500"), ctx.log, &globals)?;
        prelearn(ctx, &topo, name)?;
        for rep in ctx.reps.clone() {
            match iperf(ctx, &topo) {
                Ok(g) => push(
                    res,
                    name,
                    "tcp_mtu3500",
                    rep,
                    g,
                    "MTU 3500 on both ends of both wires".to_owned(),
                ),
                Err(e) => note(res, "iperf3 at MTU 3500", &e),
            }
        }
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn sh_out(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The `run` subcommand.
pub fn run(a: &RunArgs) -> anyhow::Result<()> {
    let short = a.short;
    let reps = a.reps.unwrap_or(if short { 1 } else { 3 });
    let duration = a.duration.unwrap_or(if short { 2.0 } else { 5.0 });
    let log = CmdLog::default();
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let vwire = std::fs::canonicalize(&a.vwire)
        .with_context(|| format!("vwire binary {}", a.vwire.display()))?;
    let mut ctx = Ctx {
        log: &log,
        exe,
        duration,
        reps: 0..reps,
        total_reps: reps,
        short,
        only: a.only.clone(),
    };
    let stamp = sh_out("date -u +%Y%m%dT%H%M%SZ");
    let mut res = Results {
        started: stamp.clone(),
        mode: if short { "short" } else { "full" }.to_owned(),
        reps,
        duration_s: duration,
        invocation: topo::display(&std::env::args().collect::<Vec<_>>()),
        ..Results::default()
    };
    res.machine = vec![
        ("nproc".to_owned(), sh_out("nproc")),
        ("kernel".to_owned(), sh_out("uname -r")),
        ("cpu".to_owned(), sh_out("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-")),
        ("memory".to_owned(), sh_out("grep MemTotal /proc/meminfo | tr -s ' '")),
        ("vwire commit".to_owned(), sh_out("git rev-parse --short HEAD 2>/dev/null; git status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)'").replace('\n', " ")),
    ];
    for (gap_ms, label) in [(1, "1 ms"), (10, "10 ms")] {
        match WakeCost::measure(Duration::from_millis(gap_ms), if short { 50 } else { 200 }) {
            Ok(w) => res.machine.push((
                format!("wakeup round trip {label} apart, p50"),
                format!(
                    "{:.1} us with both threads on one CPU, {:.1} us across two CPUs \
                     (two threads, a socket pair; `vwire-bench` wake probe)",
                    w.same_cpu_us, w.other_cpu_us
                ),
            )),
            Err(e) => res.notes.push(format!("wakeup probe: {e:#}")),
        }
    }
    let mut kinds = vec![DutKind::LinuxBridge, DutKind::Vwire { bin: vwire }];
    let want_ovs = a.with_ovs
        || a.dut
            .as_ref()
            .is_some_and(|d| d.iter().any(|x| x == "ovs-afxdp"));
    let have_ovs = which("ovs-vswitchd") && which("ovsdb-server") && which("ovs-vsctl");
    match (want_ovs, have_ovs) {
        (true, true) => kinds.push(DutKind::OvsAfxdp),
        (true, false) => {
            let n = "ovs-afxdp skipped: ovs-vswitchd is not installed. Install it with \
                     `apt-get install openvswitch-switch` (Debian; the runner starts its own \
                     daemons, the system service is not needed) and rerun with --with-ovs";
            eprintln!("{n}");
            res.notes.push(n.to_owned());
        }
        (false, true) => res
            .notes
            .push("ovs-afxdp not measured: pass --with-ovs to include it".to_owned()),
        (false, false) => res.notes.push(
            "ovs-afxdp not measured: ovs-vswitchd is not installed \
             (`apt-get install openvswitch-switch`, then --with-ovs)"
                .to_owned(),
        ),
    }
    if let Some(only) = &a.dut {
        kinds.retain(|k| only.iter().any(|o| o == k.name()));
    }
    let mut globals: String = a.vwire_set.iter().map(|kv| format!("{kv}\n")).collect();
    if !a
        .vwire_set
        .iter()
        .any(|kv| kv.starts_with("max_macs_per_port"))
    {
        globals += &format!("max_macs_per_port = {BENCH_STATIONS_PER_PORT}\n");
    }
    if let Some(s) = a.spin_us {
        globals += &format!("spin_us = {s}\n");
    }
    let base = std::env::temp_dir().join(format!("vwire-bench-{}", std::process::id()));
    res.duts = kinds.iter().map(|k| k.name().to_owned()).collect();
    // Rounds: each repetition runs every device in turn, so a slow spell of the shared host
    // falls on every device's samples alike instead of on one device's all.
    let mut aborted = vec![false; kinds.len()];
    for round in 0..reps {
        ctx.reps = round..round + 1;
        if reps > 1 {
            eprintln!("== round {} of {reps}", round + 1);
        }
        for (i, kind) in kinds.iter().enumerate() {
            if aborted[i] {
                continue;
            }
            // Each round's topology is gone before the next: names repeat, and so the
            // report's command list stays one round long.
            let prefix = format!("vwb{}-{i}", std::process::id());
            let workdir = base.join(kind.name());
            if let Err(e) = bench_dut(&ctx, kind, &prefix, &workdir, &globals, &mut res) {
                let n = format!("{}: aborted: {e:#}", kind.name());
                eprintln!("{n}");
                res.notes.push(n);
                aborted[i] = true;
            }
        }
    }
    res.commands = log.lines();
    let (md, latest) = report::write(&res, &a.out)?;
    eprintln!("wrote {} and {}", md.display(), latest.display());
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{middle_half_mean, percentile, search_highest_rate};

    #[allow(clippy::cast_precision_loss, reason = "rates below 2^52")]
    fn pps_f64(rate: u64) -> f64 {
        rate as f64
    }

    /// A device that passes at up to 600 kpps, behind a generator offering 1 Mpps flat out.
    fn device(rate: Option<u64>) -> anyhow::Result<(f64, bool, String)> {
        let offered = rate.map_or(1e6, pps_f64);
        Ok((offered, offered <= 600e3, String::new()))
    }

    #[test]
    fn rate_search_closes_in_from_both_sides() {
        let (best, log) = search_highest_rate(20e3, 6, device).unwrap();
        let best = best.unwrap();
        // Six halvings of 20k..1M: within 1M / 64 of the truth, and never above it.
        assert!(best <= 600e3 && best > 600e3 - 1e6 / 64.0, "{best}");
        assert_eq!(log.len(), 7, "flat out and six probes: {log:?}");
    }

    #[test]
    fn rate_search_ends_at_once_when_flat_out_passes_and_says_when_nothing_does() {
        let (best, log) = search_highest_rate(20e3, 6, |r| {
            Ok((r.map_or(5e5, pps_f64), true, String::new()))
        })
        .unwrap();
        assert_eq!(best, Some(5e5));
        assert!(log[1].contains("the generator"), "{log:?}");
        let (best, log) = search_highest_rate(20e3, 3, |r| {
            Ok((r.map_or(1e6, pps_f64), false, String::new()))
        })
        .unwrap();
        assert_eq!(best, None);
        assert!(
            log.last().unwrap().contains("below the search range"),
            "{log:?}"
        );
    }

    #[test]
    fn middle_half_mean_ignores_the_tails_and_resolves_below_a_microsecond() {
        // 60 % threes, 40 % fours, one outlier each way: p50 says 3, the mean of the middle
        // half says how far towards 4.
        let mut v = vec![3.0; 60];
        v.extend([4.0; 40]);
        v[0] = 1.0;
        v[99] = 500.0;
        v.sort_by(f64::total_cmp);
        assert!((percentile(&v, 0.5) - 3.0).abs() < f64::EPSILON);
        let m = middle_half_mean(&v);
        assert!((m - 3.3).abs() < 1e-9, "{m}");
        assert!((middle_half_mean(&[7.0]) - 7.0).abs() < f64::EPSILON);
    }
}
