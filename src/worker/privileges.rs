//! Handing a worker started by a root supervisor to the unprivileged worker user.
//!
//! The worker does what needs root first (joining its cgroup, binding its socket in the
//! supervisor's own directory), then takes the user's groups, group and user ids before
//! it reads a byte of the model. Setting the user id last leaves no way back: the check at
//! the end proves it.

use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;

/// Becomes `name` (its primary and supplementary groups too), for good.
pub fn become_user(name: &str) -> anyhow::Result<()> {
    let user = User::from_name(name)
        .map_err(|e| anyhow::anyhow!("could not look up worker user '{name}': {e}"))?
        .ok_or_else(|| anyhow::anyhow!("worker user '{name}' does not exist"))?;
    let c_name = CString::new(name).map_err(|_| anyhow::anyhow!("worker user '{name}' holds a NUL byte"))?;
    nix::unistd::initgroups(&c_name, user.gid)
        .map_err(|e| anyhow::anyhow!("could not take the groups of worker user '{name}': {e}"))?;
    nix::unistd::setgid(user.gid)
        .map_err(|e| anyhow::anyhow!("could not set group id {} of worker user '{name}': {e}", user.gid))?;
    nix::unistd::setuid(user.uid)
        .map_err(|e| anyhow::anyhow!("could not set user id {} of worker user '{name}': {e}", user.uid))?;
    ensure_dropped(user.uid, user.gid)
}

/// Real, effective and saved ids are the user's, and root cannot be taken back.
fn ensure_dropped(uid: Uid, gid: Gid) -> anyhow::Result<()> {
    let uids = nix::unistd::getresuid()?;
    let gids = nix::unistd::getresgid()?;
    let ids_match = [uids.real, uids.effective, uids.saved].iter().all(|u| *u == uid)
        && [gids.real, gids.effective, gids.saved].iter().all(|g| *g == gid);
    anyhow::ensure!(ids_match, "privileges not fully dropped: uids {uids:?}, gids {gids:?}");
    anyhow::ensure!(
        uid.is_root() || nix::unistd::setuid(Uid::from_raw(0)).is_err(),
        "privileges not dropped: the worker could become root again"
    );
    Ok(())
}
