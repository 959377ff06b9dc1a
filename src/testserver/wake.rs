//! An eventfd waker: lets one thread interrupt another blocked in `poll(2)`
//! or `epoll_wait(2)` (a blocked `l`/`w` watching its socket, the accept
//! loop, the event loop). One descriptor each.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub(super) struct Waker {
    fd: RawFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd(2) with no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    /// The descriptor to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Make the next (or current) wait return.
    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64; a saturated counter
        // (EAGAIN) already means "woken".
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Reset after a wake-up.
    pub fn drain(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.fd, (&mut n as *mut u64).cast(), 8) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this Waker.
        unsafe { libc::close(self.fd) };
    }
}

/// What [`wait`] saw on the watched descriptor.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Readiness {
    pub readable: bool,
    /// The peer closed or reset (POLLHUP, POLLERR, POLLRDHUP).
    pub hangup: bool,
}

/// Wait until `fd` is ready (readable if `want_read`, and always hang-up),
/// `waker` is woken, or `timeout` passes.
pub(super) fn wait(fd: RawFd, want_read: bool, waker: &Waker, timeout: Option<Duration>) -> Readiness {
    let hup = libc::POLLRDHUP;
    let mut fds = [
        libc::pollfd {
            fd,
            events: hup | if want_read { libc::POLLIN } else { 0 },
            revents: 0,
        },
        libc::pollfd {
            fd: waker.fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    // SAFETY: `fds` is a live array of two pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    waker.drain();
    if n <= 0 {
        return Readiness::default();
    }
    let r = fds[0].revents;
    Readiness {
        readable: r & libc::POLLIN != 0,
        hangup: r & (libc::POLLHUP | libc::POLLERR | hup) != 0,
    }
}
