//! A self-pipe: lets one thread interrupt another blocked in `poll(2)`
//! (a blocked `l`/`w` watching its socket, the accept loop).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub(super) struct Waker {
    read: RawFd,
    write: RawFd,
}

fn set_flags(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this module owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0
            || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0
            || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let w = Waker {
            read: fds[0],
            write: fds[1],
        };
        set_flags(w.read)?;
        set_flags(w.write)?;
        Ok(w)
    }

    /// Make the next (or current) [`wait`] return.
    pub fn wake(&self) {
        let b = 1u8;
        // SAFETY: writes one byte from a live buffer; a full pipe (EAGAIN)
        // already means "woken".
        unsafe { libc::write(self.write, (&b as *const u8).cast(), 1) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live buffer of the given size.
        while unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by this Waker.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
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
    #[cfg(target_os = "linux")]
    let hup = libc::POLLRDHUP;
    #[cfg(not(target_os = "linux"))]
    let hup = 0;
    let mut fds = [
        libc::pollfd {
            fd,
            events: hup | if want_read { libc::POLLIN } else { 0 },
            revents: 0,
        },
        libc::pollfd {
            fd: waker.read,
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
