//! Sockets handed over by the service manager (systemd socket activation, or anything
//! that speaks its protocol: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`). A socket the
//! manager owns stays open while the daemon restarts, so connections wait in the kernel's
//! backlog instead of being refused; the daemon serves on it instead of binding its own.
//! Without them the daemon binds `listen` and `admin_socket` as before.
//!
//! A daemon handing over to a new modeld ([`super::handover`]) passes its own sockets the
//! same way, named in `MODELD_HANDOVER` (`http:FD,admin:FD,link:FD`), with the link on
//! which the new daemon says it is ready.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// The variable naming what a daemon handing over passed.
pub const HANDOVER_VAR: &str = "MODELD_HANDOVER";

/// What was handed over: at most one TCP listener (HTTP) and one Unix one (the admin socket).
#[derive(Debug, Default)]
pub struct Activated {
    pub http: Option<TcpListener>,
    pub admin: Option<UnixListener>,
    /// The link to the daemon handing over to this one, when one is.
    pub predecessor: Option<UnixStream>,
}

impl Activated {
    /// Takes the sockets passed to this process, none when it was not socket-activated.
    /// Reads and unsets the environment, so it must run before any other thread starts
    /// (workers must not take the variables for theirs).
    pub fn take() -> Result<Activated, String> {
        let fds = sd_notify::listen_fds_with_names(true)
            .map_err(|e| format!("socket activation: LISTEN_FDS is not usable: {e}"))?;
        let mut activated = Activated::default();
        for (fd, name) in fds {
            activated.add(fd, &name)?;
        }
        if let Some(passed) = std::env::var_os(HANDOVER_VAR) {
            // SAFETY: before any other thread starts (see above).
            unsafe { std::env::remove_var(HANDOVER_VAR) };
            activated.take_handover(&passed.to_string_lossy())?;
        }
        Ok(activated)
    }

    /// Takes what `MODELD_HANDOVER` names: `http:FD,admin:FD,link:FD`.
    fn take_handover(&mut self, passed: &str) -> Result<(), String> {
        for item in passed.split(',') {
            let bad = || format!("{HANDOVER_VAR}: '{item}' is not NAME:FD");
            let (name, fd) = item.split_once(':').ok_or_else(bad)?;
            let fd: RawFd = fd.parse().ok().filter(|fd| *fd > 2).ok_or_else(bad)?;
            close_on_exec(fd).map_err(|e| format!("{HANDOVER_VAR}: fd {fd} ({name}): {e}"))?;
            match name {
                "http" | "admin" => self.add(fd, name)?,
                // SAFETY: the daemon handing over passed this descriptor to this process
                // alone; nothing else in it owns or closes it.
                "link" => self.predecessor = Some(unsafe { UnixStream::from_raw_fd(fd) }),
                other => return Err(format!("{HANDOVER_VAR}: unknown name '{other}'")),
            }
        }
        Ok(())
    }

    fn add(&mut self, fd: RawFd, name: &str) -> Result<(), String> {
        use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
        let address = getsockname::<SockaddrStorage>(fd)
            .map_err(|e| format!("socket activation: fd {fd} ({name}) is not a socket: {e}"))?;
        match address.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) if self.http.is_none() => {
                // SAFETY: the service manager handed this descriptor to this process alone;
                // nothing else in it owns or closes it.
                self.http = Some(unsafe { TcpListener::from_raw_fd(fd) });
            }
            Some(AddressFamily::Unix) if self.admin.is_none() => {
                // SAFETY: as above.
                self.admin = Some(unsafe { UnixListener::from_raw_fd(fd) });
            }
            family => {
                return Err(format!(
                    "socket activation: fd {fd} ({name}) is a {family:?} socket beside the ones taken; \
                     modeld takes one TCP socket (HTTP) and one Unix socket (admin)"
                ));
            }
        }
        Ok(())
    }
}

/// Marks a descriptor passed to this process close-on-exec, as sd_listen_fds(3) does: the
/// workers this daemon starts must not inherit its listening sockets or its link.
fn close_on_exec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: the descriptor was passed to this process, which owns it from here on.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}
