//! The lock verb: acquire (cancellable by a signal), run the child with
//! the lease in its environment, forward signals, act on a lost lease,
//! release after the child ends.
//!
//! One thread waits in poll(2) on two descriptors: a signalfd for the
//! signals dflock handles (blocked in every thread, library threads
//! included, before the client exists) and the completion queue's fd, on
//! which the library posts the acquire's outcome and the lease's loss.
//! The library renews the lease on its own threads meanwhile.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use dflockd::events::{EventKind, Events};
use dflockd::lease::Lease;
use dflockd::protocol::MAX_SECONDS;
use dflockd::{Error, ErrorKind};

use crate::args::{Args, OnLost};
use crate::{die, exit, fail};

/// Signals forwarded to the child (and that interrupt a wait for the lock).
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
const TAG_ACQUIRE: u64 = 1;
const TAG_LOST: u64 = 2;

/// One received signal: its number and whether the kernel sent it (a
/// terminal's ^C or hang-up, which reaches the child directly: it shares
/// dflock's process group) rather than a process (kill, systemd, cron).
struct Received {
    signo: libc::c_int,
    from_kernel: bool,
}

/// A non-blocking signalfd for `FORWARDED` + SIGCHLD, all blocked.
struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Block the signals in this (the main) thread, so that every thread
    /// started later inherits the mask, and open the signalfd. The child
    /// is given an empty mask before exec (`main`'s `pre_exec`).
    fn block() -> io::Result<Signals> {
        // SAFETY: signal-mask calls on a local, initialised set; the fd is
        // owned below.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
                libc::sigaddset(&mut set, *s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Every signal waiting (never blocks).
    fn take(&self) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            // SAFETY: zeroed plain-data struct, filled by read(2).
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `size` bytes into `info`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n != size as isize {
                return out;
            }
            out.push(Received {
                signo: info.ssi_signo as libc::c_int,
                from_kernel: info.ssi_code == libc::SI_KERNEL,
            });
        }
    }
}

/// Wait until one of `fds` is readable or `timeout` passes (`None`: no
/// bound).
fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as libc::c_int);
    // SAFETY: `p` is a valid array of p.len() pollfds. EINTR just returns.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
}

fn signal_name(sig: libc::c_int) -> String {
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGKILL => "SIGKILL",
        _ => return format!("signal {sig}"),
    };
    name.into()
}

/// How the acquire ended, if not with the lease.
enum NotAcquired {
    /// -n / -w: held elsewhere until the wait ran out.
    Conflict,
    /// A signal arrived while waiting.
    Interrupted(libc::c_int),
    Failed(Error),
}

/// Acquire, waiting as `-n`/`-w` say (without `-w`, in rounds of the
/// protocol's longest wait, for as long as it takes); a forwarded signal
/// cancels the wait.
fn acquire(lease: &Lease, events: &Events, sigs: &Signals, wait_s: Option<u64>) -> Result<(), NotAcquired> {
    loop {
        let round = wait_s.unwrap_or(MAX_SECONDS);
        lease
            .acquire_start(round, events, TAG_ACQUIRE)
            .map_err(NotAcquired::Failed)?;
        let mut interrupted = None;
        let outcome = 'round: loop {
            wait_readable(&[sigs.fd.as_raw_fd(), events.fd()], None);
            for s in sigs.take() {
                if s.signo != libc::SIGCHLD && interrupted.is_none() {
                    interrupted = Some(s.signo);
                    lease.cancel();
                }
            }
            for ev in events.poll(16) {
                if ev.tag == TAG_ACQUIRE {
                    break 'round ev;
                }
            }
        };
        match (outcome.kind, interrupted) {
            (EventKind::Acquired, None) => return Ok(()),
            (EventKind::Acquired, Some(sig)) => {
                // Granted just as the signal came: give it back.
                let _ = lease.release();
                return Err(NotAcquired::Interrupted(sig));
            }
            (_, Some(sig)) => return Err(NotAcquired::Interrupted(sig)),
            _ => {}
        }
        let err = outcome
            .error
            .unwrap_or_else(|| Error::new(ErrorKind::Io, "acquire failed"));
        match err.kind() {
            ErrorKind::Timeout if wait_s.is_none() => continue,
            ErrorKind::Timeout => return Err(NotAcquired::Conflict),
            _ => return Err(NotAcquired::Failed(err)),
        }
    }
}

/// The exit status a shell would report for a wait(2) status.
fn shell_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        exit::SOFTWARE
    }
}

/// The child's status if it has ended (reaped), never blocking.
fn reap(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => None,
        r if r == pid => Some(shell_status(status)),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return None;
            }
            die(exit::OSERR, format_args!("waitpid: {e}"))
        }
    }
}

fn send(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: signalling our own child, not yet reaped (so the pid is ours).
    unsafe { libc::kill(pid, sig) };
}

pub fn main(a: &Args) -> ! {
    let sigs = Signals::block().unwrap_or_else(|e| die(exit::OSERR, format_args!("signalfd: {e}")));
    let client = crate::client(&a.conn);
    let lease = match a.limit {
        Some(n) => client.semaphore(&a.key, n),
        None => client.lock(&a.key),
    }
    .unwrap_or_else(|e| fail(&e));
    if a.lease_s.is_some() {
        lease.set_lease_ttl(a.lease_s).unwrap_or_else(|e| fail(&e));
    }
    let events = Events::new().unwrap_or_else(|e| fail(&e));
    let what = match a.limit {
        Some(n) => format!("a slot of semaphore {:?} (limit {n})", a.key),
        None => format!("lock {:?}", a.key),
    };

    let started = Instant::now();
    if a.verbose {
        eprintln!("dflock: getting {what}");
    }
    match acquire(&lease, &events, &sigs, a.wait_s) {
        Ok(()) => {}
        Err(NotAcquired::Conflict) => {
            if a.verbose {
                match a.wait_s {
                    Some(0) => eprintln!("dflock: {what} is held elsewhere"),
                    _ => eprintln!("dflock: timed out waiting for {what}"),
                }
            }
            std::process::exit(a.conflict_exit);
        }
        Err(NotAcquired::Interrupted(sig)) => {
            if !a.quiet {
                eprintln!("dflock: {} while waiting for {what}", signal_name(sig));
            }
            std::process::exit(128 + sig);
        }
        Err(NotAcquired::Failed(e)) => fail(&e),
    }
    let (Some(token), Some(fence)) = (lease.token(), lease.fence()) else {
        die(exit::SOFTWARE, "acquired but the lease has no token")
    };
    if a.verbose {
        eprintln!(
            "dflock: got {what} (fence {fence}) after {:.3} s; running {}",
            started.elapsed().as_secs_f64(),
            a.command[0]
        );
    }
    lease.watch_lost(&events, TAG_LOST).unwrap_or_else(|e| fail(&e));

    let mut cmd = Command::new(&a.command[0]);
    // Should dflock itself die (SIGKILL, the OOM killer), its connection
    // closes and the server frees the lock: the command gets the
    // --on-lost signal then too, from the kernel.
    let on_death = match a.on_lost {
        OnLost::Term => libc::SIGTERM,
        OnLost::Kill => libc::SIGKILL,
        OnLost::Ignore => 0,
    };
    // SAFETY: getpid is a plain syscall.
    let dflock_pid = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (sigemptyset, pthread_sigmask, prctl,
    // getppid, raise) on locals.
    unsafe {
        cmd.pre_exec(move || {
            // The child must not inherit dflock's blocked signals.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if on_death != 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, on_death as libc::c_ulong, 0, 0, 0);
                if libc::getppid() != dflock_pid {
                    libc::raise(on_death); // dflock died before the prctl
                }
            }
            Ok(())
        })
    };
    let spawned = cmd
        .args(&a.command[1..])
        .env("DFLOCKD_KEY", &a.key)
        .env("DFLOCKD_TOKEN", token.as_str())
        .env("DFLOCKD_FENCE", fence.to_string())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = lease.release();
            let code = match e.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXEC,
            };
            die(code, format_args!("cannot run {}: {e}", a.command[0]));
        }
    };
    let pid = child.id() as libc::pid_t;

    let mut lost: Option<Error> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        if let Some(status) = reap(pid) {
            break status;
        }
        let timeout = kill_at.map(|t| t.saturating_duration_since(Instant::now()));
        wait_readable(&[sigs.fd.as_raw_fd(), events.fd()], timeout);
        for s in sigs.take() {
            // A terminal's signals already reached the child (same process group).
            if s.signo != libc::SIGCHLD && !s.from_kernel {
                send(pid, s.signo);
            }
        }
        for ev in events.poll(16) {
            if ev.kind != EventKind::Lost || lost.is_some() {
                continue;
            }
            let err = ev
                .error
                .unwrap_or_else(|| Error::new(ErrorKind::LeaseLost, "lease lost"));
            let action = match a.on_lost {
                OnLost::Term => {
                    send(pid, libc::SIGTERM);
                    kill_at = Some(Instant::now() + Duration::from_secs_f64(a.kill_after_s));
                    format!(
                        "sent SIGTERM to the command (pid {pid}), SIGKILL in {} s",
                        a.kill_after_s
                    )
                }
                OnLost::Kill => {
                    send(pid, libc::SIGKILL);
                    format!("sent SIGKILL to the command (pid {pid})")
                }
                OnLost::Ignore => format!("the command (pid {pid}) runs on UNPROTECTED (--on-lost=ignore)"),
            };
            eprintln!(
                "dflock: LOST {what} while the command ran: {}; {action}",
                err.message()
            );
            lost = Some(err);
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            kill_at = None;
            eprintln!("dflock: the command (pid {pid}) outlived --kill-after; sending SIGKILL");
            send(pid, libc::SIGKILL);
        }
    };
    drop(child);

    if lost.is_some() {
        eprintln!(
            "dflock: the command ended with status {status} after {what} was lost; exiting {}",
            exit::LOST
        );
        std::process::exit(exit::LOST);
    }
    match lease.release() {
        Ok(()) => {
            if a.verbose {
                eprintln!("dflock: released {what}; the command's status was {status}");
            }
        }
        Err(e) if e.kind() == ErrorKind::LeaseLost => {
            eprintln!(
                "dflock: LOST {what} ({}) before the command's end was seen: it may have run unprotected; \
                 the command's status was {status}",
                e.message()
            );
            std::process::exit(exit::LOST);
        }
        Err(e) => {
            if !a.quiet {
                eprintln!(
                    "dflock: warning: could not release {what} ({}); the server frees it when the connection \
                     closes or the lease expires",
                    e.message()
                );
            }
        }
    }
    drop(lease);
    drop(client);
    std::process::exit(status)
}
