//! The forwarder sleeps on the CPU whose XDP program will wake it.
//!
//! Waking a thread that sleeps on another, idle CPU takes an inter-processor interrupt, and
//! on a VM whose idle vCPU the host has descheduled, that is tens of microseconds per frame
//! at low rates. The XDP program records the CPU it last redirected on ([`WakeCpu`]); before
//! sleeping, the forwarder pins itself there, so the next frame wakes it with a local
//! wakeup. Only after a long sleep, though (traffic is sparse, the CPUs idle): under load
//! it sleeps briefly or not at all and stays unpinned, so the scheduler spreads the work as
//! usual ([`Follower`]).

use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};
use std::{sync::atomic::Ordering, time::Duration};

use tracing::debug;

use crate::xsk::Mmap;

/// The CPU that last handed a frame to one of our sockets while the forwarder slept, as the
/// XDP program wrote it (entry 0 of `WAKE_CPU`; entry 1 says whether the forwarder sleeps).
#[derive(Debug)]
pub struct WakeCpu {
    map: Mmap,
}

impl WakeCpu {
    /// Wraps the mmapped values of the two-entry `WAKE_CPU` array.
    #[must_use]
    pub fn new(map: Mmap) -> Self {
        Self { map }
    }

    #[must_use]
    pub fn get(&self) -> u32 {
        self.map.bpf_array_u32(0).load(Ordering::Relaxed)
    }

    /// Tells the XDP program whether the forwarder sleeps: only frames that arrive while it
    /// does are wakers (not the replies its own transmits produce).
    fn set_asleep(&self, asleep: bool) {
        self.map
            .bpf_array_u32(1)
            .store(u32::from(asleep), Ordering::Relaxed);
    }
}

/// A sleep at least this long means sparse traffic: sleep next time on the waking CPU.
/// Shorter ones mean load (or a burst): run anywhere. On these VMs an idle vCPU costs tens of
/// microseconds to wake after about a millisecond (ping RTT at 1 ms intervals 95 -> 10 us).
pub const PIN_AFTER_SLEEP: Duration = Duration::from_micros(500);
/// After sleeps this long both CPUs are cold anyway, and work split over two of them
/// finishes sooner (ping at 10 ms intervals: p99 ~400 us pinned, ~200 us not).
pub const PIN_BEFORE_SLEEP: Duration = Duration::from_millis(5);

/// More frames than this between two sleeps is load, not sparse traffic.
pub const SPARSE_FRAMES: u32 = 32;

/// The forwarder's policy: where to sleep, from how long it last slept and how much it did
/// while awake.
#[derive(Debug)]
pub struct Follower {
    wake: WakeCpu,
    affinity: Affinity,
    last_sleep: Duration,
    frames_awake: u32,
}

impl Follower {
    /// Follows `wake` from the calling thread's current affinity.
    ///
    /// # Errors
    /// `sched_getaffinity` fails.
    pub fn new(wake: WakeCpu) -> nix::Result<Self> {
        Ok(Self {
            wake,
            affinity: Affinity::of_this_thread()?,
            last_sleep: Duration::ZERO,
            frames_awake: 0,
        })
    }

    /// Called just before sleeping.
    pub fn before_sleep(&mut self) {
        let sparse = self.frames_awake <= SPARSE_FRAMES
            && (PIN_AFTER_SLEEP..PIN_BEFORE_SLEEP).contains(&self.last_sleep);
        if sparse {
            self.affinity.pin(self.wake.get() as usize);
        } else {
            self.affinity.release();
        }
        self.wake.set_asleep(true);
    }

    /// Called on waking, with how long the sleep took.
    pub fn after_sleep(&mut self, slept: Duration) {
        self.wake.set_asleep(false);
        self.last_sleep = slept;
        self.frames_awake = 0;
    }

    /// Called with each batch received: a burst means load, so run anywhere at once.
    pub fn received(&mut self, frames: u32) {
        self.frames_awake = self.frames_awake.saturating_add(frames);
        if self.frames_awake > SPARSE_FRAMES {
            self.affinity.release();
        }
    }
}

/// The calling thread's CPU affinity: the set it may use, and whether it is pinned to one.
#[derive(Debug)]
pub struct Affinity {
    allowed: CpuSet,
    pinned: Option<usize>,
}

impl Affinity {
    /// The calling thread's allowed CPUs (a container's cpuset, say), as it is now.
    ///
    /// # Errors
    /// `sched_getaffinity` fails.
    pub fn of_this_thread() -> nix::Result<Self> {
        Ok(Self {
            allowed: sched_getaffinity(Pid::from_raw(0))?,
            pinned: None,
        })
    }

    /// Pins the calling thread to `cpu`, if that CPU is allowed and it is not already there.
    pub fn pin(&mut self, cpu: usize) {
        if self.pinned == Some(cpu) || !self.allowed.is_set(cpu).unwrap_or(false) {
            return;
        }
        let mut one = CpuSet::new();
        if one.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &one).is_ok() {
            self.pinned = Some(cpu);
        } else {
            debug!(cpu, "could not pin the forwarder");
        }
    }

    /// Lets the calling thread run on every allowed CPU again.
    pub fn release(&mut self) {
        if self.pinned.take().is_some() {
            let _ = sched_setaffinity(Pid::from_raw(0), &self.allowed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(set: &CpuSet) -> Vec<usize> {
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect()
    }

    /// A follower over plain memory standing in for the BPF map, on a fresh thread.
    fn with_follower(test: impl FnOnce(&mut Follower, usize) + Send + 'static) {
        std::thread::spawn(move || {
            let wake = WakeCpu::new(Mmap::anonymous(4096).unwrap());
            let mut f = Follower::new(wake).unwrap();
            let cpu = *cpus(&f.affinity.allowed).last().unwrap();
            f.wake
                .map
                .bpf_array_u32(0)
                .store(u32::try_from(cpu).unwrap(), Ordering::Relaxed);
            test(&mut f, cpu);
        })
        .join()
        .unwrap();
    }

    fn now_allowed() -> Vec<usize> {
        cpus(&sched_getaffinity(Pid::from_raw(0)).unwrap())
    }

    #[test]
    fn sparse_traffic_sleeps_on_the_waking_cpu() {
        with_follower(|f, cpu| {
            let all = now_allowed();
            f.after_sleep(Duration::from_millis(1));
            f.received(2);
            f.before_sleep();
            assert_eq!(now_allowed(), vec![cpu]);
            // A burst while awake: load, run anywhere at once.
            f.received(SPARSE_FRAMES);
            assert_eq!(now_allowed(), all);
        });
    }

    #[test]
    fn short_or_very_long_sleeps_or_busy_periods_do_not_pin() {
        with_follower(|f, _| {
            let all = now_allowed();
            for (slept, frames) in [
                (Duration::from_micros(100), 1),
                (Duration::from_millis(50), 1),
                (Duration::from_millis(1), SPARSE_FRAMES + 1),
            ] {
                f.after_sleep(slept);
                f.received(frames);
                f.before_sleep();
                assert_eq!(
                    now_allowed(),
                    all,
                    "{slept:?} asleep, {frames} frames awake"
                );
            }
        });
    }

    #[test]
    fn pins_only_to_allowed_cpus_and_releases() {
        std::thread::spawn(|| {
            let mut a = Affinity::of_this_thread().unwrap();
            let first = cpus(&a.allowed)[0];
            a.pin(first);
            assert_eq!(a.pinned, Some(first));
            assert_eq!(now_allowed(), vec![first]);
            a.pin(CpuSet::count() + 5);
            assert_eq!(a.pinned, Some(first), "an impossible CPU is ignored");
            a.release();
            assert_eq!(a.pinned, None);
            assert_eq!(now_allowed(), cpus(&a.allowed));
        })
        .join()
        .unwrap();
    }
}
