//! Sockets handed over by the service manager (systemd socket activation, or anything
//! that speaks its protocol: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`). A socket the
//! manager owns stays open while the daemon restarts, so connections wait in the kernel's
//! backlog instead of being refused; the daemon serves on it instead of binding its own.
//! Without them the daemon binds `listen` and `admin_socket` as before.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

/// What was handed over: at most one TCP listener (HTTP) and one Unix one (the admin socket).
#[derive(Debug, Default)]
pub struct Activated {
    pub http: Option<TcpListener>,
    pub admin: Option<UnixListener>,
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
        Ok(activated)
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
