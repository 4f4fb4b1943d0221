//! The master's signals: handlers only record the signal and wake the loop through a self-pipe
//! (async-signal-safe); the loop does the work.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::signal::*;
use signal_hook::SigId;

/// The signals the master acts on, in the order it handles them when several are pending.
pub const HANDLED: &[i32] = &[
    SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD,
];

pub struct SignalQueue {
    flags: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<SigId>,
    read: OwnedFd,
    write: OwnedFd,
    /// Other descriptors of the master that a worker must not keep (the metrics listener).
    child_close: Vec<RawFd>,
    /// Descriptors open only for now (the control socket and its clients), set before each
    /// fork by [`Self::close_in_child_now`].
    child_close_now: Vec<RawFd>,
}

impl SignalQueue {
    pub fn install() -> std::io::Result<Self> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(std::io::Error::from)?;
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for &sig in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
            ids.push(signal_hook::low_level::pipe::register_raw(
                sig,
                write.as_raw_fd(),
            )?);
            flags.push((sig, flag));
        }
        Ok(Self {
            flags,
            ids,
            read,
            write,
            child_close: Vec::new(),
            child_close_now: Vec::new(),
        })
    }

    /// Waits until a signal arrives, one of `also` is ready (readable, or writable where its
    /// flag says so) or `timeout` passes; returns the pending signals.
    pub fn wait(&self, timeout: Duration, also: &[(BorrowedFd<'_>, bool)]) -> Vec<i32> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        fds.extend(also.iter().map(|(fd, write)| {
            let flags = if *write {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            PollFd::new(*fd, flags)
        }));
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut sink = [0u8; 64];
        while matches!(nix::unistd::read(&self.read, &mut sink), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, f)| f.swap(false, Ordering::SeqCst))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Has [`Self::forget_in_child`] close `fd` in the worker too.
    pub fn close_in_child(&mut self, fd: RawFd) {
        self.child_close.push(fd);
    }

    /// Has [`Self::forget_in_child`] close `fds` in the workers forked next (replacing the
    /// previous list).
    pub fn close_in_child_now(&mut self, fds: Vec<RawFd>) {
        self.child_close_now = fds;
    }

    /// In a forked worker: drop the master's handlers so signals reach the worker's own, and
    /// close the master's own descriptors.
    pub fn forget_in_child(&self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        for &fd in self.child_close.iter().chain(&self.child_close_now) {
            let _ = nix::unistd::close(fd);
        }
        let _ = nix::unistd::close(self.write.as_raw_fd());
        let _ = nix::unistd::close(self.read.as_raw_fd());
    }
}

/// A signal's usual name, for the log.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGTTIN => "SIGTTIN",
        SIGTTOU => "SIGTTOU",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGWINCH => "SIGWINCH",
        SIGCHLD => "SIGCHLD",
        _ => "signal",
    }
}
