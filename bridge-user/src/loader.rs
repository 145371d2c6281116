//! Loads the XDP program, attaches it to ports and keeps its maps in step with the sockets.
//!
//! The program is embedded at build time (see `build.rs`). aya attaches it in driver mode
//! through a bpf_link, so the program is detached when the [`Loader`] is dropped — and also
//! when the daemon dies without cleaning up, because the link dies with the process.

use std::os::fd::RawFd;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, XskMap},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError,
};
use bridge_common::maps::{
    xsk_index, XdpPortStats, MAX_QUEUES_PER_PORT, PORT_SLOTS, XDP_STATS, XSKS,
};

use crate::control::XdpRow;

const PROGRAM: &str = "vwire_steer";

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
    #[error("port {port} has {queues} rx queues; at most {max} are supported")]
    TooManyQueues { port: String, queues: u32, max: u32 },
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct Loader {
    ebpf: Ebpf,
}

impl Loader {
    /// Loads the embedded object and verifies the program.
    ///
    /// # Errors
    /// The object does not load or the verifier rejects the program.
    pub fn load() -> Result<Self, LoaderError> {
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/bridge"
        )))
        .map_err(LoaderError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .expect("the embedded object has the program")
            .try_into()
            .map_err(LoaderError::Program)?;
        program.load().map_err(LoaderError::Program)?;
        Ok(Self { ebpf })
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
                queues: sockets.len() as u32,
                max: MAX_QUEUES_PER_PORT,
            });
        }
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
    pub fn attach(&mut self, port: &str) -> Result<(), LoaderError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .expect("loaded")
            .try_into()
            .map_err(LoaderError::Program)?;
        program
            .attach(port, XdpMode::Driver)
            .map(drop)
            .map_err(|source| LoaderError::Attach {
                port: port.to_owned(),
                source,
            })
    }

    /// Takes the per-CPU statistics map out, for the control path to read.
    ///
    /// # Errors
    /// The map is missing or of the wrong type (a build mismatch).
    pub fn take_xdp_stats(&mut self) -> Result<XdpStats, LoaderError> {
        let map = self.ebpf.take_map(XDP_STATS).ok_or(LoaderError::Map {
            name: XDP_STATS,
            source: aya::maps::MapError::InvalidName {
                name: XDP_STATS.into(),
            },
        })?;
        let map = PerCpuArray::try_from(map).map_err(|source| LoaderError::Map {
            name: XDP_STATS,
            source,
        })?;
        Ok(XdpStats { map })
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

/// Reader of the XDP program's per-CPU, per-slot counters.
pub struct XdpStats {
    map: PerCpuArray<MapData, XdpPortStats>,
}

impl std::fmt::Debug for XdpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpStats").finish_non_exhaustive()
    }
}

impl XdpStats {
    /// The counters of `slot`, summed over CPUs; zeros if the map cannot be read.
    #[must_use]
    pub fn get(&self, slot: u32) -> XdpRow {
        let mut row = XdpRow::default();
        if let Ok(per_cpu) = self.map.get(&slot, 0) {
            for s in per_cpu.iter() {
                row.redirected += s.redirected;
                row.passed += s.passed;
                row.aborted += s.aborted;
            }
        }
        row
    }
}
