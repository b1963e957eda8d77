//! Who is on the other end of an admin connection (SO_PEERCRED), and whether they may use
//! it: root, the daemon's own user, or a member of `admin_group`. The socket's file mode
//! (0660) keeps others from connecting; this check holds even where the mode was loosened
//! or the socket was reached some other way.

use tokio::net::UnixStream;

/// The connecting process, as the kernel vouches for it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        Ok(Peer { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() })
    }
}

/// Admits root, the daemon's user, and members of `admin_group` (by the peer's primary
/// group or the user's groups); says why not otherwise.
pub fn admit(peer: &Peer, admin_group: Option<(&str, u32)>) -> Result<(), String> {
    let own = nix::unistd::geteuid().as_raw();
    if peer.uid == 0 || peer.uid == own {
        return Ok(());
    }
    if let Some((_, gid)) = admin_group
        && (peer.gid == gid || user_groups(peer.uid).contains(&gid))
    {
        return Ok(());
    }
    let who = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) {
        Ok(Some(user)) => format!("user {} (uid {})", user.name, peer.uid),
        _ => format!("uid {}", peer.uid),
    };
    Err(match admin_group {
        Some((name, _)) => {
            format!("permission denied: {who} is not root, the daemon's user or a member of admin_group '{name}'")
        }
        None => format!("permission denied: {who} is not root or the daemon's user (no admin_group is configured)"),
    })
}

/// The groups the user database gives `uid` (empty when it has no entry).
fn user_groups(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid).map(|g| g.into_iter().map(|g| g.as_raw()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_daemons_user_and_the_group_are_admitted() {
        let own = nix::unistd::geteuid().as_raw();
        assert!(admit(&Peer { uid: 0, gid: 0, pid: None }, None).is_ok());
        assert!(admit(&Peer { uid: own, gid: 12345, pid: None }, None).is_ok());
        let stranger = Peer { uid: 4_000_123, gid: 4_000_123, pid: Some(1) };
        if own != stranger.uid {
            let why = admit(&stranger, Some(("modeld", 777))).unwrap_err();
            assert!(
                why.contains("uid 4000123 is not root, the daemon's user or a member of admin_group 'modeld'"),
                "{why}"
            );
            assert!(admit(&Peer { gid: 777, ..stranger }, Some(("modeld", 777))).is_ok(), "primary group");
        }
    }
}
