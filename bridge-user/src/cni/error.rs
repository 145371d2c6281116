//! CNI errors: a code from the spec's table, a message and details, printed as the spec's
//! error JSON on stdout.

use serde_json::{json, Value};

/// Error codes from the CNI spec ("Error" section); 100 and up are ours.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration; the message names key and value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist: the runtime needs no clean-up (no DEL).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like `CNI_COMMAND` or `CNI_CONTAINERID`.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. reading the network config from stdin.
    pub const IO: u32 = 5;
    /// Failed to decode content, e.g. the network config is not JSON of the right shape.
    pub const DECODE: u32 = 6;
    /// Invalid network config: valid JSON, but a value is wrong.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the node daemon is not reachable (yet).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const UNAVAILABLE: u32 = 50;
    /// A netlink or ethtool operation failed.
    pub const NETLINK: u32 = 100;
    /// The node daemon refused the request.
    pub const DAEMON_REFUSED: u32 = 101;
    /// CHECK found the attachment different from what ADD made.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error: the spec's `code`, `msg` and `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code}){}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    #[must_use]
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// A code-7 error for a bad value in the network config.
    #[must_use]
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg, "")
    }

    /// A netlink/ethtool failure while doing `what`.
    #[must_use]
    pub fn netlink(what: impl Into<String>, e: &std::io::Error) -> Self {
        Self::new(code::NETLINK, what, e.to_string())
    }

    /// The error JSON the spec defines, for `cni_version`.
    #[must_use]
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}
