//! `vwire-bench sink`: receives through a `PACKET_RX_RING`, counts our frames, and measures
//! one-way latency (receive time in user space minus the generator's timestamp, both
//! `CLOCK_MONOTONIC` on the same host) and loss from sequence numbers.

use serde::Serialize;

use crate::{
    frame,
    ring::{Dir, PacketRing},
};

/// Options of the sink.
#[derive(Clone, Debug, clap::Args)]
pub struct SinkArgs {
    /// Interface to receive on.
    #[arg(long)]
    pub dev: String,
    /// Longest time to run, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop this many seconds after the last test frame, once at least one arrived (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub idle_exit: f64,
    /// Ring slots.
    #[arg(long, default_value_t = 16384)]
    pub ring: u32,
    /// When the ring is empty, sleep this many microseconds instead of waiting in `poll` to
    /// be woken (0: wait). Each wakeup runs in the transmitting path, the device under test's,
    /// so throughput rows nap; latency rows must not.
    #[arg(long, default_value_t = 0)]
    pub nap_us: u32,
    /// Pin the receiving thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Only count frames received after this file appears (the runner uses it to skip
    /// warm-up); ignored when absent from the command line.
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
}

/// What the sink prints.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct SinkReport {
    pub dev: String,
    /// Test frames (carrying the magic) received.
    pub frames: u64,
    pub bytes: u64,
    /// Other frames seen (ARP, IPv6, ...).
    pub other_frames: u64,
    /// Sequence numbers missing between the lowest and highest seen.
    pub missing: u64,
    /// Frames that arrived with a lower sequence number than one before them.
    pub reordered: u64,
    /// Rate between the first and last test frame.
    pub rx_pps: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
    /// Frames the kernel dropped because the ring was full.
    pub ring_drops: u64,
}

/// Latency histogram: 100 ns buckets up to 1 ms, 10 us buckets up to 101 ms, then overflow.
#[derive(Debug, Clone)]
pub struct Hist {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    max_ns: u64,
    n: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            fine: vec![0; 10_000],
            coarse: vec![0; 10_000],
            over: 0,
            max_ns: 0,
            n: 0,
        }
    }
}

impl Hist {
    pub fn record(&mut self, ns: u64) {
        self.n += 1;
        self.max_ns = self.max_ns.max(ns);
        #[allow(clippy::cast_possible_truncation, reason = "bounded by the checks")]
        if ns < 1_000_000 {
            self.fine[(ns / 100) as usize] += 1;
        } else if ns < 101_000_000 {
            self.coarse[((ns - 1_000_000) / 10_000) as usize] += 1;
        } else {
            self.over += 1;
        }
    }

    /// The `q` quantile (0..=1) in microseconds (bucket midpoint); 0 with no samples.
    #[must_use]
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "rank within n"
        )]
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.fine.iter().enumerate() {
            seen += c;
            if seen >= rank {
                #[allow(clippy::cast_precision_loss, reason = "small index")]
                return (i as f64 * 100.0 + 50.0) / 1000.0;
            }
        }
        for (i, c) in self.coarse.iter().enumerate() {
            seen += c;
            if seen >= rank {
                #[allow(clippy::cast_precision_loss, reason = "small index")]
                return 1000.0 + i as f64 * 10.0 + 5.0;
            }
        }
        #[allow(clippy::cast_precision_loss, reason = "reporting only")]
        let max = self.max_ns as f64 / 1000.0;
        max
    }
}

/// Runs the sink to completion.
pub fn run(a: &SinkArgs) -> anyhow::Result<SinkReport> {
    if let Some(cpu) = a.cpu {
        crate::ring::pin_cpu(cpu)?;
    }
    let mut ring = PacketRing::open(&a.dev, Dir::Rx, a.ring)?;
    let mut r = SinkReport {
        dev: a.dev.clone(),
        ..SinkReport::default()
    };
    let mut hist = Hist::default();
    let start = frame::mono_ns();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "durations are small and positive"
    )]
    let (end, idle_ns) = (
        start + (a.duration * 1e9) as u64,
        (a.idle_exit * 1e9) as u64,
    );
    let (mut first_rx, mut last_rx) = (0u64, 0u64);
    let (mut seq_min, mut seq_max, mut last_seq) = (u32::MAX, 0u32, None::<u32>);
    let mut armed = a.ready_file.is_none();
    let _ = ring.rx_drops(); // reset
    loop {
        let mut got = 0u32;
        while let Some(parsed) = ring.rx_next(|f, len| (len, frame::parse_stamp(f))) {
            got += 1;
            let (len, stamp) = parsed;
            let Some(s) = stamp else {
                r.other_frames += 1;
                continue;
            };
            if !armed {
                continue;
            }
            let now = frame::mono_ns();
            if first_rx == 0 {
                first_rx = now;
            }
            last_rx = now;
            r.frames += 1;
            r.bytes += u64::from(len);
            if s.ts_ns != 0 {
                hist.record(now.saturating_sub(s.ts_ns));
                seq_min = seq_min.min(s.seq);
                seq_max = seq_max.max(s.seq);
                if last_seq.is_some_and(|l| s.seq < l) {
                    r.reordered += 1;
                }
                last_seq = Some(s.seq);
            }
            if got >= 256 {
                break;
            }
        }
        let now = frame::mono_ns();
        if now >= end || (idle_ns > 0 && last_rx != 0 && now - last_rx > idle_ns) {
            break;
        }
        if !armed {
            armed = a.ready_file.as_ref().is_some_and(|p| p.exists());
        }
        if got == 0 {
            if a.nap_us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(a.nap_us)));
            } else {
                ring.wait(Dir::Rx, 10);
            }
        }
    }
    r.ring_drops = ring.rx_drops();
    if seq_min <= seq_max {
        let span = u64::from(seq_max - seq_min) + 1;
        let counted = r.frames.min(span);
        r.missing = span - counted;
    }
    #[allow(clippy::cast_precision_loss, reason = "reporting only")]
    if last_rx > first_rx {
        r.rx_pps = (r.frames - 1) as f64 / ((last_rx - first_rx) as f64 / 1e9);
    }
    r.latency_p50_us = hist.quantile_us(0.5);
    r.latency_p99_us = hist.quantile_us(0.99);
    #[allow(clippy::cast_precision_loss, reason = "reporting only")]
    {
        r.latency_max_us = hist.max_ns as f64 / 1000.0;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        assert!(
            (h.quantile_us(0.5) - 50.05).abs() < 0.2,
            "{}",
            h.quantile_us(0.5)
        );
        assert!((h.quantile_us(0.99) - 99.05).abs() < 0.2);
        h.record(5_000_000);
        assert!(h.quantile_us(1.0) > 4999.0);
    }
}
