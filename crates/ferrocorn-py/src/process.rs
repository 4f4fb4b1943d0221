//! Process-level settings: daemonizing, the workers' user and group.

use nix::unistd::{Gid, Group, Uid, User};
use pyo3::prelude::*;

/// The user and group workers run as (`--user`, `--group`), resolved in the master so a typo
/// fails at start-up, not in every worker.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Identity {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
}

impl Identity {
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Self, String> {
        let mut id = Self::default();
        if let Some(user) = user {
            let found = match user.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n)),
                Err(_) => User::from_name(user),
            };
            let u = found
                .map_err(|e| format!("cannot look up user {user:?}: {e}"))?
                .ok_or_else(|| format!("no such user: {user:?}"))?;
            id.uid = Some(u.uid);
            id.gid = Some(u.gid);
        }
        if let Some(group) = group {
            let found = match group.parse::<u32>() {
                Ok(n) => Group::from_gid(Gid::from_raw(n)),
                Err(_) => Group::from_name(group),
            };
            let g = found
                .map_err(|e| format!("cannot look up group {group:?}: {e}"))?
                .ok_or_else(|| format!("no such group: {group:?}"))?;
            id.gid = Some(g.gid);
        }
        Ok(id)
    }

    /// Whether a user or group is configured (the worker may switch to it).
    pub fn switches(&self) -> bool {
        self.uid.is_some() || self.gid.is_some()
    }

    /// Switches this (worker) process to the identity: group first, then user.
    pub fn apply(&self) -> nix::Result<()> {
        if let Some(gid) = self.gid {
            if gid != nix::unistd::getegid() {
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
            }
        }
        if let Some(uid) = self.uid {
            if uid != nix::unistd::geteuid() {
                nix::unistd::setuid(uid)?;
            }
        }
        Ok(())
    }

    /// Gives a unix socket file to the workers' user, so they (and nginx in their group) can
    /// use it after dropping privileges.
    pub fn chown(&self, path: &std::path::Path) {
        if self.switches() {
            let _ = nix::unistd::chown(path, self.uid, self.gid);
        }
    }
}

/// `-D/--daemon`: detach from the terminal the usual way (fork, setsid, fork again, standard
/// streams to /dev/null), through `os.fork` so Python's fork hooks run. Returns in the daemon
/// only; the intermediate processes exit. The descriptors in `keep` (those `--error-logfile`
/// points to a file) stay as they are.
pub(crate) fn daemonize(py: Python<'_>, keep: &[i32]) -> PyResult<()> {
    let os = py.import("os")?;
    for step in 0..2 {
        let pid: i32 = os.call_method0("fork")?.extract()?;
        if pid != 0 {
            os.call_method1("_exit", (0,))?;
        }
        if step == 0 {
            os.call_method0("setsid")?;
        }
    }
    let devnull: i32 = os
        .call_method1("open", ("/dev/null", os.getattr("O_RDWR")?))?
        .extract()?;
    for fd in (0..3).filter(|fd| !keep.contains(fd)) {
        os.call_method1("dup2", (devnull, fd))?;
    }
    if devnull > 2 {
        os.call_method1("close", (devnull,))?;
    }
    Ok(())
}
