//! `vwire-cni`: the CNI plugin binary. Reads the `CNI_*` environment and the network config
//! on stdin, prints the result (or the CNI error JSON) on stdout, and exits non-zero on error.

use std::{
    io::{Read as _, Write as _},
    process::ExitCode,
};

use bridge_user::cni::{self, CniError, Env};

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => cni::run(&env, &stdin),
        Err(e) => Err(CniError::new(
            cni::code::IO,
            "cannot read the network config from stdin",
            e.to_string(),
        )),
    };
    let (out, status) = match result {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(value)) => (value, ExitCode::SUCCESS),
        Err(e) => {
            let version =
                cni::requested_version(&stdin).unwrap_or_else(|| cni::LATEST_VERSION.to_owned());
            (e.to_json(&version), ExitCode::FAILURE)
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{out}").is_err() {
        return ExitCode::FAILURE;
    }
    status
}
