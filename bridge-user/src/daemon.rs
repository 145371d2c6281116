//! Start-up and shutdown: load the program, start the forwarder on its own thread, add the
//! configured ports through the same path the API uses, and run the control path (API
//! socket, signals, vanished-port clean-up) on a small tokio runtime.
//!
//! If any configured port cannot be added, start-up fails and everything done so far is
//! undone. Shutdown stops the forwarder, then drops the loader, which detaches every XDP
//! program.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

use crate::{
    config::BridgeConfig,
    control::{http as server_http, server, Command},
    fdb::Fdb,
    forward::{Forwarder, LoopConfig},
    loader::{Loader, LoaderError},
    xsk::{self, sys::EventFd, SocketConfig, Umem, XskError},
};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("port {port}: {reason}")]
    Port { port: String, reason: String },
    #[error(transparent)]
    Xsk(#[from] XskError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("control socket {path}: {reason}")]
    ControlSocket { path: String, reason: String },
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the forwarding thread failed")]
    ForwarderDied,
    #[error("cannot start the control runtime")]
    Runtime(#[source] std::io::Error),
    #[error("bridge_domain \"{domain}\": vxlan: {reason}")]
    Uplink { domain: String, reason: String },
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// Anything that prevents start-up (described for the operator), or a forwarder crash.
pub fn run(config: &BridgeConfig, socket_path: &Path) -> Result<(), DaemonError> {
    // Local address and peers from the environment (Kubernetes: the downward API), checked
    // before anything is touched.
    let mut uplinks = Vec::new();
    for domain in &config.domains {
        if let Some(vxlan) = &domain.vxlan {
            let mut vxlan = vxlan.clone();
            vxlan
                .resolve_env(|k| std::env::var(k).ok())
                .map_err(|reason| DaemonError::Uplink {
                    domain: domain.name.clone(),
                    reason,
                })?;
            uplinks.push((domain.name.clone(), vxlan));
        }
    }
    if let Err(e) = xsk::sys::raise_memlock_rlimit() {
        // Linux 5.11+ accounts BPF maps to the cgroup and CAP_IPC_LOCK covers the UMEM.
        info!(error = %e, "could not raise RLIMIT_MEMLOCK; fine on Linux 5.11+");
    }
    let listener = server::bind(socket_path)?;
    let mut loader = Loader::load()?;
    let umem = Umem::new(config.umem_frames, config.frame_size)?;

    let (commands_tx, commands_rx) = crossbeam_channel::bounded(64);
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::unbounded_channel();
    let wakeup =
        Arc::new(EventFd::new().map_err(|e| XskError::syscall("eventfd", "control wakeup", e))?);
    let loop_config = LoopConfig {
        spin: config.spin,
        socket: SocketConfig {
            ring_size: config.ring_size,
        },
    };
    let fdb = Fdb::new(
        config.fdb_max_age,
        config.fdb_max_entries,
        config.max_macs_per_port,
    );
    let mut forwarder = Forwarder::new(
        umem,
        fdb,
        loop_config,
        commands_rx,
        Arc::clone(&wakeup),
        gone_tx,
    );
    for domain in &config.domains {
        forwarder.ensure_domain(&domain.name);
    }
    if config.fast_path && config.tcp_handoff {
        match loader.enable_tcp_handoff() {
            Ok(pairs) if pairs.is_empty() => {
                info!("one usable CPU: no TCP handoff; under load TCP goes through the forwarder");
            }
            Ok(pairs) => debug!(?pairs, "under load, TCP segments go to the next CPU"),
            Err(e) => warn!(
                error = %server::chain(&e),
                "no TCP handoff; under load TCP goes through the forwarder"
            ),
        }
    }
    if config.fast_path {
        let enabled = loader
            .take_fast_path()
            .map_err(|e| server::chain(&e))
            .and_then(|fast| forwarder.enable_fast_path(fast).map_err(|e| e.to_string()));
        if let Err(e) = enabled {
            warn!(error = %e, "no XDP fast path; every frame goes through the forwarder");
        }
    }
    if config.follow_wakeups {
        let followed = loader
            .wake_cpu()
            .map_err(|e| e.to_string())
            .and_then(|wake| forwarder.follow_wakeups(wake).map_err(|e| e.to_string()));
        if let Err(e) = followed {
            info!(error = %e, "cannot follow wakeups; the forwarder sleeps on any CPU");
        }
    }
    // With one CPU there is nothing to split the kernel's transmit work with.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if config.tx_thread && cpus >= 2 {
        forwarder.start_tx_helper().map_err(DaemonError::Runtime)?;
    } else if config.tx_thread {
        info!("one CPU available: no tx thread");
    }
    // One socket per port is the common case; ports with more queues just get less each.
    let configured: usize =
        config.domains.iter().map(|d| d.ports.len()).sum::<usize>() + uplinks.len();
    forwarder.expect_sockets(u32::try_from(configured).unwrap_or(u32::MAX));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vwire-fwd".into())
        .spawn(move || {
            let _done = done_tx; // dropped when the loop ends, however it ends
            forwarder.run();
        })
        .map_err(DaemonError::Runtime)?;

    let handle = server::Handle::new(commands_tx, wakeup, loader);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        // Handlers first: a signal during start-up is then a clean stop once ports are up,
        // not a kill that would leave uplink devices behind.
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        for domain in &config.domains {
            for port in &domain.ports {
                if let Err(reason) = handle
                    .add_port(&port.name, &domain.name, port.mode.clone())
                    .await
                {
                    return Err(DaemonError::Port {
                        port: port.name.clone(),
                        reason,
                    });
                }
            }
        }
        for (domain, vxlan) in &uplinks {
            if let Err(reason) = handle.add_uplink(domain, vxlan).await {
                return Err(DaemonError::Uplink {
                    domain: domain.clone(),
                    reason,
                });
            }
        }
        let metrics = match config.metrics_listen {
            Some(addr) => match server_http::bind(addr).await {
                Ok(listener) => Some(tokio::spawn(server_http::serve(listener, handle.clone()))),
                Err(source) => return Err(DaemonError::Metrics { addr, source }),
            },
            None => None,
        };
        info!(socket = %socket_path.display(), "vwire running");
        let serve = tokio::spawn(server::serve(listener, handle.clone()));
        let mut done_rx = done_rx;
        let result = loop {
            tokio::select! {
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
                _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()) }
                Some(gone) = gone_rx.recv() => handle.port_gone(gone).await,
                _ = &mut done_rx => break Err(DaemonError::ForwarderDied),
            }
        };
        serve.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        result
    });
    handle.send(Command::Shutdown);
    let joined = thread.join();
    handle.destroy_uplinks();
    // Dropping the last handle drops the loader, which detaches every XDP program.
    drop(handle);
    drop(runtime);
    remove_socket(socket_path);
    match (outcome, joined) {
        (Ok(()), Ok(())) => {
            info!(
                uptime_secs = started.elapsed().as_secs(),
                "vwire stopped; XDP programs detached"
            );
            Ok(())
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(_)) => {
            error!("forwarding thread panicked");
            Err(DaemonError::ForwarderDied)
        }
    }
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove the control socket");
    }
}

/// The default control socket path.
#[must_use]
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/vwire/vwire.sock")
}
