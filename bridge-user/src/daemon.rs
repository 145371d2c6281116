//! Start-up and shutdown: load the program, bind every port, run the forwarder on its own
//! thread and the control path (API socket, signals) on a small tokio runtime.
//!
//! Start-up checks and binds everything before the first XDP program is attached, so a
//! failure leaves the interfaces as they were. Shutdown stops the forwarder, then drops the
//! loader, which detaches every XDP program.

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::BridgeConfig,
    control::{server, Command},
    fdb::Fdb,
    forward::{Domain, Forwarder, LoopConfig},
    loader::{Loader, LoaderError},
    port::{DomainId, Port, PortId},
    xsk::{self, sys::EventFd, Socket, SocketConfig, Umem, XskError},
};

/// Size of each UMEM frame; MTU 1500 frames fit with the kernel's 256 bytes of headroom.
pub const FRAME_SIZE: u32 = 2048;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("port {port}: no such interface in this network namespace")]
    PortNotFound { port: String },
    #[error("port {port}: cannot count its rx queues in /sys/class/net/{port}/queues")]
    Queues {
        port: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Xsk(#[from] XskError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("control socket {path}: {reason}")]
    ControlSocket { path: String, reason: String },
    #[error("the forwarding thread failed")]
    ForwarderDied,
    #[error("cannot start the control runtime")]
    Runtime(#[source] std::io::Error),
}

/// Counts a port's rx queues: one socket is bound per queue, or frames on the others would
/// be lost silently.
fn rx_queue_count(port: &str) -> Result<u32, DaemonError> {
    let dir = format!("/sys/class/net/{port}/queues");
    let entries = std::fs::read_dir(&dir).map_err(|source| DaemonError::Queues {
        port: port.into(),
        source,
    })?;
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(u32::try_from(n).unwrap_or(u32::MAX).max(1))
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// Anything that prevents start-up (described for the operator), or a forwarder crash.
pub fn run(config: &BridgeConfig, socket_path: &Path) -> Result<(), DaemonError> {
    if let Err(e) = xsk::sys::raise_memlock_rlimit() {
        // Linux 5.11+ accounts BPF maps to the cgroup and CAP_IPC_LOCK covers the UMEM.
        info!(error = %e, "could not raise RLIMIT_MEMLOCK; fine on Linux 5.11+");
    }
    let listener = server::bind(socket_path)?;

    // Resolve every port before touching anything.
    let mut planned = Vec::new();
    for (di, domain) in config.domains.iter().enumerate() {
        for name in &domain.ports {
            let ifindex = xsk::sys::if_nametoindex(name)
                .map_err(|_| DaemonError::PortNotFound { port: name.clone() })?;
            let queues = rx_queue_count(name)?;
            planned.push((
                name.clone(),
                ifindex,
                queues,
                DomainId(u16::try_from(di).expect("domains fit u16")),
            ));
        }
    }

    let umem = Umem::new(config.umem_frames, FRAME_SIZE)?;
    let socket_config = SocketConfig {
        ring_size: config.ring_size,
    };
    let mut loader = Loader::load()?;
    let mut ports: Vec<Option<Port>> = Vec::with_capacity(planned.len());
    let mut domains: Vec<Domain> = config
        .domains
        .iter()
        .map(|d| Domain {
            name: d.name.clone(),
            members: Vec::new(),
        })
        .collect();
    for (slot, (name, ifindex, queues, domain)) in planned.into_iter().enumerate() {
        let mut sockets = Vec::with_capacity(queues as usize);
        for queue in 0..queues {
            let owner = ports
                .iter()
                .flatten()
                .flat_map(|p: &Port| p.sockets.first())
                .next()
                .or(sockets.first());
            let socket = Socket::bind(
                &umem,
                &name,
                ifindex,
                queue,
                owner.map(AsFd::as_fd),
                socket_config,
            )?;
            sockets.push(socket);
        }
        let fds: Vec<(u32, i32)> = sockets.iter().map(|s| (s.queue(), s.raw_fd())).collect();
        let slot = u32::try_from(slot).expect("slots fit u32");
        loader.register_port(&name, slot, ifindex, &fds)?;
        domains[usize::from(domain.0)].members.push(PortId(slot));
        info!(port = %name, ifindex, queues, slot, domain = %domains[usize::from(domain.0)].name, "port bound");
        ports.push(Some(Port {
            name,
            ifindex,
            domain,
            sockets,
            tx_stage: Vec::new(),
            counters: Default::default(),
        }));
    }
    for port in ports.iter().flatten() {
        loader.attach(&port.name)?;
    }
    let xdp_stats = loader.take_xdp_stats()?;

    let (commands_tx, commands_rx) = crossbeam_channel::bounded(64);
    let wakeup =
        Arc::new(EventFd::new().map_err(|e| XskError::syscall("eventfd", "control wakeup", e))?);
    let forwarder = Forwarder::new(
        umem,
        ports,
        domains,
        Fdb::new(config.fdb_max_age, config.fdb_max_entries),
        LoopConfig { spin: config.spin },
        commands_rx,
        Arc::clone(&wakeup),
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vwire-fwd".into())
        .spawn(move || {
            let _done = done_tx; // dropped when the loop ends, however it ends
            forwarder.run();
        })
        .map_err(DaemonError::Runtime)?;

    let handle = server::Handle::new(commands_tx, wakeup, xdp_stats);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let started = Instant::now();
    info!(socket = %socket_path.display(), "vwire running");
    let forwarder_died = runtime.block_on(async {
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let serve = tokio::spawn(server::serve(listener, handle.clone()));
        let died = tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); false }
            _ = sigint.recv() => { info!("SIGINT: stopping"); false }
            _ = done_rx => true,
        };
        serve.abort();
        handle.send(Command::Shutdown);
        died
    });
    if thread.join().is_err() || forwarder_died {
        error!("forwarding thread exited unexpectedly");
        drop(loader);
        remove_socket(socket_path);
        return Err(DaemonError::ForwarderDied);
    }
    drop(loader); // detaches every XDP program
    remove_socket(socket_path);
    info!(
        uptime_secs = started.elapsed().as_secs(),
        "vwire stopped; XDP programs detached"
    );
    Ok(())
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        warn!(path = %path.display(), error = %e, "could not remove the control socket");
    }
}

/// The default control socket path.
#[must_use]
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/vwire/vwire.sock")
}
