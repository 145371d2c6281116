//! The control socket: a root-only unix socket speaking one JSON line each way, and the
//! port operations that need both the forwarder and the XDP loader.
//!
//! Each connection carries one [`Request`]; the server turns it into [`Command`]s, wakes
//! the forwarder and awaits the answer. Invalid requests get an error response and change
//! nothing. Port additions and removals are serialised by the loader lock, so the XSKMAP,
//! the slot map and the forwarder's port table move together.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use crossbeam_channel::Sender;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{oneshot, Mutex},
};
use tracing::{debug, info, warn};

use super::{Command, EntrySelector, PortGone, PortSpec, Request, Response, StaticEntry, VlanSpec};
use crate::{
    daemon::DaemonError,
    forward::PortError,
    loader::Loader,
    port::{check_interface_name, rx_queue_count},
    vlan::PortMode,
    xsk::sys::{if_nametoindex, EventFd},
};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request, and the forwarder to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often, and how far apart, a bind that found its queue busy is retried (1 s in all).
const BUSY_RETRIES: u32 = 50;
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Creates the socket, refusing to take over one a live daemon is using.
///
/// # Errors
/// The path is in use by a running daemon, or cannot be created.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let fail = |reason: String| DaemonError::ControlSocket {
        path: path.display().to_string(),
        reason,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(fail("another vwire daemon is listening there".into()));
    }
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    // Root only: the socket controls the data plane.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    Ok(listener)
}

/// The control path's view of the forwarder and the loader.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: Sender<Command>,
    wakeup: Arc<EventFd>,
    loader: Arc<Mutex<Loader>>,
    /// VXLAN uplinks; a plain mutex, never held across an await (see `uplink`).
    uplinks: Arc<std::sync::Mutex<crate::uplink::Uplinks>>,
}

/// Formats an error with its chain of causes, for API answers.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

impl Handle {
    #[must_use]
    pub fn new(commands: Sender<Command>, wakeup: Arc<EventFd>, loader: Loader) -> Self {
        Self {
            commands,
            wakeup,
            loader: Arc::new(Mutex::new(loader)),
            uplinks: Arc::default(),
        }
    }

    /// The VXLAN uplinks of this daemon.
    pub(crate) fn uplinks(&self) -> &std::sync::Mutex<crate::uplink::Uplinks> {
        &self.uplinks
    }

    /// Queues a command and wakes the forwarder. Returns `false` if the forwarder is gone
    /// or its queue is full.
    pub fn send(&self, command: Command) -> bool {
        let sent = self.commands.try_send(command).is_ok();
        self.wakeup.notify();
        sent
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err("the forwarder is busy or stopping; try again".into());
        }
        match tokio::time::timeout(TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => Err("the forwarder did not answer".into()),
        }
    }

    /// Binds a port's sockets, publishes them to the XDP program and attaches it. On any
    /// failure everything done so far is undone.
    ///
    /// # Errors
    /// A message for the operator: bad name, no such interface, bind or attach failure.
    pub async fn add_port(&self, name: &str, domain: &str, mode: PortMode) -> Result<(), String> {
        check_interface_name(name)?;
        if domain.is_empty() {
            return Err("the bridge domain name is empty".into());
        }
        let mut loader = self.loader.lock().await;
        let ifindex = if_nametoindex(name)
            .map_err(|_| format!("no interface {name} in the daemon's network namespace"))?;
        let queues = rx_queue_count(name)
            .map_err(|e| format!("cannot count the rx queues of {name}: {e}"))?;
        let max = bridge_common::maps::MAX_QUEUES_PER_PORT;
        if queues > max {
            return Err(format!(
                "{name} has {queues} rx queues; at most {max} are supported"
            ));
        }
        let mtu =
            crate::port::mtu(name).map_err(|e| format!("cannot read the MTU of {name}: {e}"))?;
        let spec = PortSpec {
            name: name.to_owned(),
            ifindex,
            queues,
            mtu,
            domain: domain.to_owned(),
            mode,
        };
        let mut attempt = 0;
        let added = loop {
            match self.ask(|r| Command::AddPort(spec.clone(), r)).await? {
                Ok(added) => break added,
                // A socket of this port closed moments ago (port del, then add): the kernel
                // frees its queue asynchronously. Wait here, not in the forwarding thread.
                Err(PortError::Bind(e)) if e.is_queue_busy() && attempt < BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(BUSY_RETRY_DELAY).await;
                }
                Err(e) => return Err(chain(&e)),
            }
        };
        if let Err(e) = loader
            .register_port(name, added.slot, ifindex, &added.sockets)
            .and_then(|()| loader.attach(name, ifindex))
        {
            loader.forget_port(name, added.slot, ifindex);
            let _ = self.ask(|r| Command::RemovePort(name.to_owned(), r)).await;
            return Err(chain(&e));
        }
        Ok(())
    }

    /// Detaches and removes a port; its frames return to the pool, its MACs are forgotten.
    ///
    /// # Errors
    /// No such port.
    pub async fn remove_port(&self, name: &str) -> Result<(), String> {
        let mut loader = self.loader.lock().await;
        let removed = self
            .ask(|r| Command::RemovePort(name.to_owned(), r))
            .await??;
        loader.forget_port(name, removed.slot, removed.ifindex);
        Ok(())
    }

    /// Cleans up after a port the forwarder removed because its interface vanished.
    pub async fn port_gone(&self, gone: PortGone) {
        self.loader
            .lock()
            .await
            .forget_port(&gone.name, gone.removed.slot, gone.removed.ifindex);
        info!(port = %gone.name, "vanished port cleaned up");
    }

    /// Interface counters, with the XDP program's counters filled in.
    ///
    /// # Errors
    /// The forwarder did not answer.
    pub async fn status(&self) -> Result<super::Status, String> {
        let mut status = self.ask(Command::ShowInterfaces).await?;
        let loader = self.loader.lock().await;
        for row in &mut status.interfaces {
            row.xdp = loader.xdp_stats(row.slot);
            // Interface counters count every frame, whichever path carried it.
            row.counters.rx_frames += row.xdp.fast_rx_frames;
            row.counters.rx_bytes += row.xdp.fast_rx_bytes;
            row.counters.tx_frames += row.xdp.fast_tx_frames;
            row.counters.tx_bytes += row.xdp.fast_tx_bytes;
        }
        Ok(status)
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Response {
        let result: Result<Value, String> = match request {
            Request::ShowInterfaces {} => self
                .status()
                .await
                .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string())),
            Request::ShowFdb {} => self
                .ask(Command::ShowFdb)
                .await
                .map(|rows| json!({ "entries": self.with_remotes(rows) })),
            Request::ShowBridgeDomains {} => self
                .ask(Command::ShowBridgeDomains)
                .await
                .map(|rows| json!({ "bridge_domains": rows })),
            Request::PortAdd {
                name,
                domain,
                vlan,
                trunk,
                native,
            } => match (VlanSpec {
                vlan,
                trunk,
                native,
            })
            .to_mode()
            {
                Ok(mode) => self
                    .add_port(&name, &domain, mode)
                    .await
                    .map(|()| json!({ "added": name })),
                Err(e) => Err(e),
            },
            Request::PortDel { name } => self
                .remove_port(&name)
                .await
                .map(|()| json!({ "removed": name })),
            Request::FdbAdd { mac, port, vlan } => self
                .ask(|r| Command::AddStaticEntry(StaticEntry { mac, port, vlan }, r))
                .await
                .and_then(|r| r)
                .map(|()| json!({})),
            Request::FdbDel { mac, domain, vlan } => {
                let selector = EntrySelector {
                    mac: mac.clone(),
                    domain,
                    vlan,
                };
                match self
                    .ask(|r| Command::DeleteEntry(selector, r))
                    .await
                    .and_then(|r| r)
                {
                    Ok(true) => Ok(json!({ "deleted": mac })),
                    Ok(false) => Err(format!("no FDB entry for {mac} on that domain and VLAN")),
                    Err(e) => Err(e),
                }
            }
            Request::FdbFlush { domain, port } => self
                .ask(|reply| Command::FlushFdb {
                    domain,
                    port,
                    reply,
                })
                .await
                .and_then(|r| r)
                .map(|n| json!({ "flushed": n })),
            Request::PeerAdd { address, domain } => self
                .peer_add(&address, &domain)
                .map(|()| json!({ "added": address })),
            Request::PeerDel { address, domain } => self
                .peer_del(&address, &domain)
                .map(|forgotten| json!({ "removed": address, "forgotten_macs": forgotten })),
            Request::ShowPeers {} => self.show_peers().map(|rows| json!({ "uplinks": rows })),
        };
        match result {
            Ok(value) => Response::Ok(value),
            Err(e) => Response::Error(e),
        }
    }
}

/// Accepts connections until the task is aborted.
pub async fn serve(listener: std::os::unix::net::UnixListener, handle: Handle) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "control socket unusable; the API is off");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &handle).await {
                        debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept on the control socket failed");
                tokio::time::sleep(super::ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, handle: &Handle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let response = match tokio::time::timeout(TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::Error("timed out waiting for the request".into()),
        Ok(Err(e)) => Response::Error(format!("unreadable request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST => {
            Response::Error(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => handle.handle(request).await,
            Err(e) => Response::Error(format!("invalid request: {e}")),
        },
    };
    let mut out =
        serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"error\":\"encoding\"}".to_vec());
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
