//! Loads the XDP program, attaches it to ports and keeps its maps in step with the sockets.
//!
//! The program is embedded at build time (see `build.rs`). aya attaches it in driver mode
//! through a bpf_link, so the program is detached when the [`Loader`] is dropped — and also
//! when the daemon dies without cleaning up, because the link dies with the process.

use std::os::fd::RawFd;

use aya::{
    maps::{Array, CpuMap, HashMap, MapData, PerCpuArray, XskMap},
    programs::{xdp::XdpLinkId, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use bridge_common::maps::{
    xsk_index, XdpPortStats, CPU_HANDOFF, FAST_FDB, FAST_FDB_ENTRIES, FAST_PORTS, FAST_USED,
    HANDOFF_CPUS, HANDOFF_TARGET, MAX_QUEUES_PER_PORT, PORT_DEVS, PORT_SLOTS, XDP_STATS, XSKS,
};

const PROGRAM: &str = "vwire_steer";
/// The program a CPU's kernel thread runs on the TCP segments handed to it (`CPU_HANDOFF`).
const HANDOFF_PROGRAM: &str = "vwire_handoff";
/// Frames each CPU's handoff queue holds (the kernel's own samples use the same).
const HANDOFF_QUEUE: u32 = 2048;

/// Errors loading or attaching the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("loading the eBPF object failed")]
    Load(#[source] EbpfError),
    #[error("the XDP program was rejected by the kernel")]
    Program(#[source] ProgramError),
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "attaching XDP in driver mode to {port} failed (is another XDP program attached? `ip link show dev {port}` tells)"
    )]
    Attach {
        port: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "XDP refuses {port}: the MTU at the other end of this veth is larger than XDP allows on a veth ({VETH_XDP_MAX_MTU} with 4 KiB pages); lower the client's MTU"
    )]
    PeerMtuTooLarge { port: String },
    #[error("port {port} has {queues} rx queues; at most {max} are supported")]
    TooManyQueues { port: String, queues: u32, max: u32 },
    #[error("handing TCP segments to CPU {cpu}: {source}")]
    Handoff {
        cpu: u32,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    #[error("reading the CPUs this daemon may use: {0}")]
    Cpus(String),
    #[error("duplicating the handoff program's fd: {0}")]
    ProgramFd(#[source] std::io::Error),
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct Loader {
    ebpf: Ebpf,
    /// Entries of `CPU_HANDOFF`: the kernel's possible CPUs, at most `HANDOFF_CPUS`.
    handoff_cpus: u32,
    /// The XDP link of each attached port, to detach it when the port is removed.
    links: std::collections::HashMap<String, (u32, XdpLinkId)>,
}

impl Loader {
    /// Loads the embedded object and verifies the program.
    ///
    /// # Errors
    /// The object does not load or the verifier rejects the program.
    pub fn load() -> Result<Self, LoaderError> {
        // A CPU map may not have more entries than the kernel has CPUs (`E2BIG`).
        let handoff_cpus = aya::util::nr_cpus()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .clamp(1, HANDOFF_CPUS);
        let ebpf = EbpfLoader::new()
            .map_max_entries(CPU_HANDOFF, handoff_cpus)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/bridge"
            )))
            .map_err(LoaderError::Load)?;
        let mut loader = Self {
            ebpf,
            handoff_cpus,
            links: std::collections::HashMap::new(),
        };
        loader.load_program(PROGRAM)?;
        Ok(loader)
    }

    fn load_program(&mut self, name: &str) -> Result<&mut Xdp, LoaderError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .expect("the embedded object has the program")
            .try_into()
            .map_err(LoaderError::Program)?;
        program.load().map_err(LoaderError::Program)?;
        Ok(program)
    }

    /// Publishes a port's sockets (one per rx queue) under `slot`, then maps its interface
    /// to the slot. In this order, the program never sees a slot without sockets.
    ///
    /// # Errors
    /// A map update failed, or the port has more queues than the map has room for.
    pub fn register_port(
        &mut self,
        name: &str,
        slot: u32,
        ifindex: u32,
        sockets: &[(u32, RawFd)],
    ) -> Result<(), LoaderError> {
        if sockets.len() > MAX_QUEUES_PER_PORT as usize {
            return Err(LoaderError::TooManyQueues {
                port: name.to_owned(),
                queues: u32::try_from(sockets.len()).unwrap_or(u32::MAX),
                max: MAX_QUEUES_PER_PORT,
            });
        }
        self.reset_xdp_stats(slot)?;
        let mut xsks: XskMap<&mut MapData> = self.map_mut(XSKS)?;
        for &(queue, fd) in sockets {
            xsks.set(xsk_index(slot, queue), fd, 0)
                .map_err(|source| LoaderError::Map { name: XSKS, source })?;
        }
        let mut slots: HashMap<&mut MapData, u32, u32> = self.map_mut(PORT_SLOTS)?;
        slots
            .insert(ifindex, slot, 0)
            .map_err(|source| LoaderError::Map {
                name: PORT_SLOTS,
                source,
            })?;
        Ok(())
    }

    /// Attaches the program to `port` in driver mode.
    ///
    /// # Errors
    /// The interface is gone, or already has an XDP program.
    pub fn attach(&mut self, port: &str, ifindex: u32) -> Result<(), LoaderError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .expect("loaded")
            .try_into()
            .map_err(LoaderError::Program)?;
        let link = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link) => link,
            // Devices without driver-mode XDP (a vxlan uplink): generic mode, which AF_XDP
            // serves in copy mode, as it does on veth.
            Err(e) if driver_mode_unsupported(&e) => {
                tracing::info!(%port, error = %e, "no driver-mode XDP here; attaching in generic (SKB) mode");
                program
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|source| LoaderError::Attach {
                        port: port.to_owned(),
                        source,
                    })?
            }
            Err(e) if errno(&e) == Some(libc::ERANGE) => {
                return Err(LoaderError::PeerMtuTooLarge {
                    port: port.to_owned(),
                })
            }
            Err(source) => {
                return Err(LoaderError::Attach {
                    port: port.to_owned(),
                    source,
                })
            }
        };
        self.links.insert(port.to_owned(), (ifindex, link));
        Ok(())
    }

    /// The XDP program's record of the CPU it last redirected on, mapped into our memory.
    ///
    /// # Errors
    /// The map is missing or cannot be mapped.
    pub fn wake_cpu(&self) -> Result<crate::affinity::WakeCpu, LoaderError> {
        let map = self.mmap_array(
            bridge_common::maps::WAKE_CPU,
            bridge_common::maps::WAKE_CPU_ENTRIES,
        )?;
        Ok(crate::affinity::WakeCpu::new(map))
    }

    /// The values of a `BPF_F_MMAPABLE` array of `entries` u32s, mapped into our memory.
    fn mmap_array(
        &self,
        name: &'static str,
        entries: u32,
    ) -> Result<crate::xsk::Mmap, LoaderError> {
        use std::os::fd::AsFd;
        let Some(aya::maps::Map::Array(data)) = self.ebpf.map(name) else {
            return Err(LoaderError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            });
        };
        crate::xsk::Mmap::bpf_array(data.fd().as_fd(), entries).map_err(|e| LoaderError::Map {
            name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: e,
            }),
        })
    }

    /// Lets the XDP program hand TCP segments to another CPU under load (`CPU_HANDOFF` in
    /// `bridge_common::maps`): loads `vwire_handoff`, gives each CPU the daemon may use (online
    /// and in its affinity) a queue that runs it, and each one the next such CPU as its
    /// target. Returns the (from, to) pairs; none with one CPU.
    ///
    /// # Errors
    /// The program is rejected (kernels before 5.9 cannot chain one to a CPU map), a map
    /// update fails (no target is then left set), or the CPUs cannot be read.
    pub fn enable_tcp_handoff(&mut self) -> Result<Vec<(u32, u32)>, LoaderError> {
        let online = aya::util::online_cpus()
            .map_err(|(path, e)| LoaderError::Cpus(format!("{path}: {e}")))?;
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map_err(|e| LoaderError::Cpus(format!("sched_getaffinity: {e}")))?;
        let usable: Vec<u32> = online
            .into_iter()
            .filter(|&c| c < self.handoff_cpus && allowed.is_set(c as usize).unwrap_or(false))
            .collect();
        let pairs = handoff_targets(&usable);
        if pairs.is_empty() {
            return Ok(pairs);
        }
        let fd = self
            .load_program(HANDOFF_PROGRAM)?
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(LoaderError::ProgramFd)?;
        let mut queues: CpuMap<&mut MapData> = self.map_mut(CPU_HANDOFF)?;
        for &(_, to) in &pairs {
            queues
                .set(to, HANDOFF_QUEUE, Some(&fd), 0)
                .map_err(|source| LoaderError::Handoff { cpu: to, source })?;
        }
        // Targets last: the program finds a queue behind every target it reads.
        let mut targets: Array<&mut MapData, u32> = self.map_mut(HANDOFF_TARGET)?;
        for &(from, to) in &pairs {
            if let Err(source) = targets.set(from, to + 1, 0) {
                for &(set, _) in &pairs {
                    let _ = targets.set(set, 0, 0);
                }
                return Err(LoaderError::Map {
                    name: HANDOFF_TARGET,
                    source,
                });
            }
        }
        Ok(pairs)
    }

    /// Hands the fast path's maps to their keeper, the forwarder (see `fastpath`).
    ///
    /// # Errors
    /// A map is missing from the program.
    pub fn take_fast_path(&mut self) -> Result<crate::fastpath::FastPath, LoaderError> {
        let mut take = |name: &'static str| {
            self.ebpf.take_map(name).ok_or(LoaderError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            })
        };
        let (ports, fdb, devs) = (take(FAST_PORTS)?, take(FAST_FDB)?, take(PORT_DEVS)?);
        let used = self.mmap_array(FAST_USED, FAST_FDB_ENTRIES)?;
        let wrap = |name: &'static str| move |source| LoaderError::Map { name, source };
        Ok(crate::fastpath::FastPath::new(
            ports.try_into().map_err(wrap(FAST_PORTS))?,
            fdb.try_into().map_err(wrap(FAST_FDB))?,
            devs.try_into().map_err(wrap(PORT_DEVS))?,
            used,
        ))
    }

    /// Undoes `attach` and `register_port`: detaches XDP (if the interface still exists)
    /// and clears the port's slot entry, so a reused ifindex starts clean.
    pub fn forget_port(&mut self, port: &str, slot: u32, ifindex: u32) {
        // Only the link of this very interface: a new one may already have taken the name.
        if self.links.get(port).is_some_and(|(i, _)| *i == ifindex) {
            let (_, link) = self.links.remove(port).expect("checked above");
            if let Ok(program) =
                <&mut Xdp>::try_from(self.ebpf.program_mut(PROGRAM).expect("loaded"))
            {
                // Fails harmlessly when the interface is already gone (the link went with it).
                let _ = program.detach(link);
            }
        }
        if let Ok(mut slots) = self.map_mut::<HashMap<&mut MapData, u32, u32>>(PORT_SLOTS) {
            // Only if the entry is still ours: the ifindex may already belong to a new port.
            if slots.get(&ifindex, 0).ok() == Some(slot) {
                let _ = slots.remove(&ifindex);
            }
        }
        // The kernel drops a closed socket's XSKMAP entries itself; unsetting them here
        // could clobber the sockets of a port that has reused the slot meanwhile.
    }

    /// The XDP program's counters for `slot`, summed over CPUs; zeros if unreadable.
    #[must_use]
    pub fn xdp_stats(&self, slot: u32) -> XdpPortStats {
        let mut row = XdpPortStats::default();
        let Some(map) = self.ebpf.map(XDP_STATS) else {
            return row;
        };
        let Ok(stats) = PerCpuArray::<&MapData, XdpPortStats>::try_from(map) else {
            return row;
        };
        if let Ok(per_cpu) = stats.get(&slot, 0) {
            for s in per_cpu.iter() {
                row.add(s);
            }
        }
        row
    }

    /// Zeroes a slot's counters, so a port reusing it starts from zero.
    fn reset_xdp_stats(&mut self, slot: u32) -> Result<(), LoaderError> {
        let mut stats: PerCpuArray<&mut MapData, XdpPortStats> = self.map_mut(XDP_STATS)?;
        let cpus = aya::util::nr_cpus().map_or(1, |n| n);
        let zeros = aya::maps::PerCpuValues::try_from(vec![XdpPortStats::default(); cpus])
            .map_err(|e| LoaderError::Map {
                name: XDP_STATS,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "nr_cpus",
                    io_error: e,
                }),
            })?;
        stats
            .set(slot, zeros, 0)
            .map_err(|source| LoaderError::Map {
                name: XDP_STATS,
                source,
            })
    }

    fn map_mut<'a, T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>>(
        &'a mut self,
        name: &'static str,
    ) -> Result<T, LoaderError> {
        let map = self.ebpf.map_mut(name).ok_or(LoaderError::Map {
            name,
            source: aya::maps::MapError::InvalidName { name: name.into() },
        })?;
        T::try_from(map).map_err(|source| LoaderError::Map { name, source })
    }
}

/// Each CPU hands its TCP segments to the next one (the last to the first), so that the
/// receiving half of a stream runs beside the sending half. Empty with fewer than two CPUs.
fn handoff_targets(cpus: &[u32]) -> Vec<(u32, u32)> {
    if cpus.len() < 2 {
        return Vec::new();
    }
    cpus.iter()
        .zip(cpus.iter().cycle().skip(1))
        .map(|(&from, &to)| (from, to))
        .collect()
}

/// Whether a driver-mode attach failed because the device has no native XDP: `EOPNOTSUPP`
/// from bpf_link_create, or `EOPNOTSUPP`/`EINVAL` from the netlink attach aya falls back to
/// on kernels without XDP links.
fn driver_mode_unsupported(e: &ProgramError) -> bool {
    matches!(errno(e), Some(libc::EOPNOTSUPP | libc::EINVAL))
}

fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    }
}

/// The largest MTU the peer of a veth may have for XDP (without frags) to attach: a page
/// less XDP headroom, `skb_shared_info` and the Ethernet header (`veth_xdp_set`).
pub const VETH_XDP_MAX_MTU: u32 = 4096 - 256 - 320 - 14;

#[cfg(test)]
mod tests {
    use super::handoff_targets;

    #[test]
    fn each_cpu_hands_off_to_the_next_online_one() {
        assert_eq!(handoff_targets(&[0, 1]), [(0, 1), (1, 0)]);
        assert_eq!(handoff_targets(&[0, 2, 3]), [(0, 2), (2, 3), (3, 0)]);
        assert!(handoff_targets(&[0]).is_empty());
        assert!(handoff_targets(&[]).is_empty());
    }
}
