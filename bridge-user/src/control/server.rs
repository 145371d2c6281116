//! The control socket: a root-only unix socket speaking one JSON line each way.
//!
//! Each connection carries one [`Request`]; the server turns it into a [`Command`], wakes
//! the forwarder and awaits the snapshot. Malformed requests get an error response and
//! change nothing.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use crossbeam_channel::Sender;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::oneshot,
};
use tracing::{debug, warn};

use super::{Command, Request, Response};
use crate::{daemon::DaemonError, loader::XdpStats, xsk::sys::EventFd};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request, and the forwarder to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

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

/// The control path's view of the forwarder.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: Sender<Command>,
    wakeup: Arc<EventFd>,
    xdp: Arc<Mutex<XdpStats>>,
}

impl Handle {
    #[must_use]
    pub fn new(commands: Sender<Command>, wakeup: Arc<EventFd>, xdp: XdpStats) -> Self {
        Self {
            commands,
            wakeup,
            xdp: Arc::new(Mutex::new(xdp)),
        }
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

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Response {
        let result = match request {
            Request::ShowInterfaces {} => {
                self.ask(Command::ShowInterfaces).await.map(|mut status| {
                    let xdp = self.xdp.lock().expect("xdp stats lock");
                    for row in &mut status.interfaces {
                        row.xdp = xdp.get(row.slot);
                    }
                    serde_json::to_value(status)
                })
            }
            Request::ShowFdb {} => self
                .ask(Command::ShowFdb)
                .await
                .map(|rows| serde_json::to_value(serde_json::json!({ "entries": rows }))),
        };
        match result {
            Ok(Ok(value)) => Response::Ok(value),
            Ok(Err(e)) => Response::Error(format!("internal error encoding the answer: {e}")),
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
            Err(e) => warn!(error = %e, "accept on the control socket failed"),
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
