//! Thin libc wrappers, each turning `-1` into `io::Error::last_os_error()` in one place.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

/// As [`check`], for calls that return a byte count.
fn check_size(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Maps a libc return value to `io::Result`, reading errno on `-1`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates an `AF_XDP` socket.
pub fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the returned fd is owned by us.
    let fd = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(SOL_XDP, name, value)` for a plain-old-data `value`.
pub fn set_xdp_opt<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).expect("option fits socklen_t");
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    })
    .map(drop)
}

/// `setsockopt(SOL_SOCKET, name, int)`.
pub fn set_socket_opt_int(
    fd: BorrowedFd<'_>,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("int fits socklen_t");
    // SAFETY: `value` is a live int of `len` bytes.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    })
    .map(drop)
}

/// `getsockopt(SOL_XDP, name)` into a zeroed `T`; returns the value and the length the
/// kernel wrote (older kernels write shorter structs).
pub fn get_xdp_opt<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<(T, usize)> {
    // SAFETY: only used with libc's repr(C) integer-only XDP structs, for which all-zero is valid.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(size_of::<T>()).expect("option fits socklen_t");
    // SAFETY: `value` has room for `len` bytes and outlives the call.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    })?;
    Ok((value, len as usize))
}

/// Binds an AF_XDP socket.
pub fn bind_xdp(fd: BorrowedFd<'_>, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_xdp>()).expect("fits");
    // SAFETY: `addr` is a valid sockaddr_xdp of `len` bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(addr).cast(), len) }).map(drop)
}

/// Kicks the kernel to transmit what is on a socket's tx ring (copy mode sends inside this
/// call). Returns `false` when the kernel was busy and the caller should kick again later.
///
/// # Errors
/// Errors other than the transient `EAGAIN`, `EBUSY` and `ENOBUFS`.
pub fn kick_tx(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: a zero-length sendto with no buffer and no address is the documented AF_XDP kick.
    let sent = check_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    });
    match sent {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Asks the kernel to refill from the fill ring when it has flagged that it needs a wakeup.
pub fn kick_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length, non-blocking recvfrom is the documented AF_XDP rx wakeup.
    check_size(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })
    .map(drop)
}

/// Waits until one of `fds` is readable or `timeout` passes. Returns how many are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let nfds = libc::nfds_t::try_from(fds.len()).expect("pollfd count fits nfds_t");
    // SAFETY: `fds` is a valid, exclusively borrowed array of `nfds` pollfds.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) }) {
        Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// A non-blocking eventfd the control path writes to wake the forwarder out of `poll`.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// # Errors
    /// The `eventfd` call failed.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes the waiter. Never blocks; a full counter already means "wake up".
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
    }

    /// Resets the counter after a wakeup.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when nothing is pending is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), std::ptr::from_mut(&mut value).cast(), 8) };
    }

    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Tries to lift `RLIMIT_MEMLOCK` for kernels before 5.11 that charge BPF maps to it.
///
/// # Errors
/// The kernel refused (no `CAP_SYS_RESOURCE`); on 5.11+ that is harmless.
pub fn raise_memlock_rlimit() -> io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid rlimit for the duration of the call.
    check(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) }).map(drop)
}

/// The index of a network interface in the current namespace.
///
/// # Errors
/// `NotFound` if there is no such interface.
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    let c_name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Which many-elements-at-once command of [`bpf_map_batch`].
#[derive(Clone, Copy, Debug)]
pub enum MapBatch<'a, V> {
    /// `BPF_MAP_UPDATE_BATCH` with these values, one per key (`BPF_ANY`).
    Update(&'a [V]),
    /// `BPF_MAP_DELETE_BATCH`.
    Delete,
}

/// `union bpf_attr`'s `batch` member (uapi `linux/bpf.h`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Updates or deletes `keys` of a BPF hash map in one system call instead of one each: the
/// forwarder mirrors a burst of newly learned stations into the fast path's table (Linux
/// 5.6+). `K` and `V` must be the map's key and value types, byte for byte.
///
/// # Errors
/// `(done, error)`: the kernel stops at the first element that fails; the `done` before it
/// took effect, those after it were not tried. A call refused before any element (no batch
/// support, a denied call) leaves `done` at `keys.len()`.
pub fn bpf_map_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    op: MapBatch<'_, V>,
) -> Result<(), (usize, io::Error)> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: u32::try_from(keys.len())
            .map_err(|_| (0, io::Error::from(io::ErrorKind::InvalidInput)))?,
        map_fd: u32::try_from(map.as_raw_fd()).expect("fds are not negative"),
        ..BatchAttr::default()
    };
    let cmd = match op {
        MapBatch::Update(values) => {
            assert_eq!(values.len(), keys.len(), "one value per key");
            attr.values = values.as_ptr() as u64;
            BPF_MAP_UPDATE_BATCH
        }
        MapBatch::Delete => BPF_MAP_DELETE_BATCH,
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` of its own size; `keys` (and `values`)
    // point to `count` readable elements of the map's key (and value) size, alive for the
    // call; the kernel writes back only `attr.count`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(&mut attr),
            size_of::<BatchAttr>(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        let error = io::Error::last_os_error();
        Err((attr.count as usize, error))
    }
}
