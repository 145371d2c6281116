//! What a wakeup costs on this machine, for reading the latency rows.
//!
//! The Linux bridge answers a ping inline, on the sender's CPU, without waking anyone; a
//! forwarder that sleeps when idle is woken twice per round trip. Where the woken thread's
//! CPU is idle, that takes an inter-processor interrupt, and on a VM whose idle vCPUs halt,
//! the host must first run that vCPU again. Two threads pass a byte back and forth through a
//! socket pair, `gap` apart, on one CPU and on two, and the report shows both round trips.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use crate::ring::pin_cpu;

/// Round trips (two wakeups each) after `gap` of idleness, p50 in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct WakeCost {
    pub same_cpu_us: f64,
    pub other_cpu_us: f64,
}

impl WakeCost {
    /// Measures both placements with `rounds` round trips each, on CPUs 0 and 1.
    ///
    /// # Errors
    /// A thread cannot be pinned (fewer than two CPUs, or a cpuset without 0 and 1), or the
    /// socket pair fails.
    pub fn measure(gap: Duration, rounds: usize) -> anyhow::Result<Self> {
        Ok(Self {
            same_cpu_us: round_trip_p50(0, 0, gap, rounds)?,
            other_cpu_us: round_trip_p50(0, 1, gap, rounds)?,
        })
    }
}

/// p50 of `rounds` round trips from a thread on `cpu_a` to an echoing thread on `cpu_b`.
fn round_trip_p50(cpu_a: usize, cpu_b: usize, gap: Duration, rounds: usize) -> anyhow::Result<f64> {
    let (mut a, mut b) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        pin_cpu(cpu_b)?;
        let mut byte = [0u8];
        while b.read(&mut byte)? == 1 {
            b.write_all(&byte)?;
        }
        Ok(())
    });
    // Returning drops `a`, which ends the echo thread.
    let measured = std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        pin_cpu(cpu_a)?;
        let mut byte = [0u8];
        let mut rtts = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            std::thread::sleep(gap);
            let t0 = Instant::now();
            a.write_all(&byte)?;
            a.read_exact(&mut byte)?;
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        Ok(rtts)
    });
    let rtts = measured
        .join()
        .map_err(|_| anyhow::anyhow!("wake probe panicked"))?;
    echo.join()
        .map_err(|_| anyhow::anyhow!("wake probe echo panicked"))??;
    let mut rtts = rtts?;
    rtts.sort_by(f64::total_cmp);
    rtts.get(rtts.len() / 2)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no round trips"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_measured_on_one_cpu() {
        let p50 = round_trip_p50(0, 0, Duration::from_micros(100), 5).unwrap();
        assert!(p50 > 0.0 && p50 < 1e6, "{p50}");
    }
}
