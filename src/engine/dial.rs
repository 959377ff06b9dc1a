//! Opening a connection on the engine thread without blocking it: name
//! resolution (IP literals directly; host names on a short-lived resolver
//! thread that hands its answer back through the engine's inbox), a
//! non-blocking TCP connect to each address in turn, the TLS handshake
//! driven through the same sans-I/O `Wire` as the blocking path, then
//! `auth`. Bounded by the client's connect timeout, like a blocking
//! connect. The result is an ordinary [`Connection`], usable by blocking
//! calls afterwards (its socket is back in blocking mode).

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crate::client::ClientInner;
use crate::connection::{Connection, OWN_READER, Started};
use crate::protocol::{Command, Request};
use crate::reactor::Reactor;
use crate::transport::{Transport, connect_result, connect_started};
use crate::{Error, ErrorKind};

/// What a dial needs next.
/// A dial's name resolution finished (posted by its resolver thread).
pub(crate) struct Resolved(pub(crate) u64, pub(crate) std::io::Result<Vec<SocketAddr>>);

pub(crate) enum Step {
    /// Wait for `fd` to be readable (`read`) or writable.
    Wait {
        fd: RawFd,
        read: bool,
    },
    /// Wait for the resolver thread.
    Resolving,
    /// Open and authenticated.
    Connected(Arc<Connection>),
    Failed(Error),
}

enum Stage {
    Resolving,
    Connecting(TcpStream),
    Handshaking(Transport),
    Authing(Arc<Connection>),
    /// Cluster mode: its `stable-ref` (sent) awaits its `ok`.
    Naming(Arc<Connection>, String),
    Over,
}

pub(crate) struct Dial {
    lane: (usize, usize),
    client: Arc<ClientInner>,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    next: usize,
    deadline: Instant,
    stage: Stage,
    last_error: Option<Error>,
    /// Cluster mode: the `stable-ref` to repeat (a waiter's replacement
    /// connection); `None`: a new one.
    reference: Option<String>,
    /// The operation this dial is for alone (a re-attaching waiter), not
    /// its lane.
    owner: Option<u64>,
}

impl Dial {
    /// Start opening a connection to `client`'s server `server` for lane
    /// `lane`.
    pub(crate) fn start(
        id: u64,
        lane: (usize, usize),
        client: Arc<ClientInner>,
        server: usize,
        engine: &Reactor,
    ) -> (Dial, Step) {
        let (host, port) = match client.server(server) {
            Ok((h, p)) => (h.clone(), *p),
            Err(e) => {
                let d = Dial::new(lane, client, String::new(), 0);
                return (d, Step::Failed(e));
            }
        };
        let mut d = Dial::new(lane, client, host, port);
        if let Ok(ip) = d.host.parse::<IpAddr>() {
            d.addrs.push(SocketAddr::new(ip, port));
            let step = d.connect_next();
            return (d, step);
        }
        let inbox = engine.inbox();
        let name = d.host.clone();
        // A thread of the engine's generation: its last free waits for it
        // within a bound (getaddrinfo cannot be interrupted).
        let resolve = Box::new(move || {
            let r = (name.as_str(), port).to_socket_addrs().map(Vec::from_iter);
            inbox.push(Box::new(Resolved(id, r)));
        });
        let spawned = match engine.runtime() {
            Some(rt) => rt.spawn_bounded("dflockd-resolve", resolve),
            None => Err(std::io::Error::other("the client was freed")),
        };
        match spawned {
            Ok(_) => (d, Step::Resolving),
            Err(e) => {
                let e = d.error(ErrorKind::Io, &format!("cannot resolve: {e}"));
                (d, Step::Failed(e))
            }
        }
    }

    fn new(lane: (usize, usize), client: Arc<ClientInner>, host: String, port: u16) -> Dial {
        let deadline = Instant::now() + client.config.connect_timeout;
        Dial {
            lane,
            client,
            host,
            port,
            addrs: Vec::new(),
            next: 0,
            deadline,
            stage: Stage::Resolving,
            last_error: None,
            reference: None,
            owner: None,
        }
    }

    pub(crate) fn lane(&self) -> (usize, usize) {
        self.lane
    }

    /// Make this dial operation `op`'s own, repeating `reference` as its
    /// `stable-ref` (set before the dial gets that far: a dial reaches
    /// `name` only after a later event).
    pub(crate) fn for_op(&mut self, op: u64, reference: Option<String>) {
        self.owner = Some(op);
        self.reference = reference;
    }

    /// The operation this dial is for alone, if any.
    pub(crate) fn owner(&self) -> Option<u64> {
        self.owner
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    fn error(&self, kind: ErrorKind, what: &str) -> Error {
        Error::new(kind, format!("connect to {}:{}: {what}", self.host, self.port))
    }

    /// The error for a dial that ran out of time, saying at which step.
    pub(crate) fn deadline_error(&mut self) -> Error {
        let e = match &self.stage {
            Stage::Resolving => self.error(
                ErrorKind::Deadline,
                "name resolution did not finish before the deadline",
            ),
            Stage::Connecting(_) => self.error(
                ErrorKind::Deadline,
                "not accepted before the deadline (server down or its backlog full?)",
            ),
            Stage::Handshaking(t) => t.handshake_deadline(&self.host),
            Stage::Authing(_) | Stage::Over => {
                self.error(ErrorKind::Deadline, "auth: no reply before the deadline")
            }
            Stage::Naming(..) => self.error(ErrorKind::Deadline, "stable-ref: no reply before the deadline"),
        };
        self.stage = Stage::Over;
        bump_deadline(&self.client);
        e
    }

    /// The resolver thread's answer.
    pub(crate) fn resolved(&mut self, r: std::io::Result<Vec<SocketAddr>>) -> Step {
        match r {
            Ok(addrs) => {
                self.addrs = addrs;
                self.connect_next()
            }
            Err(e) => Step::Failed(self.error(ErrorKind::Io, &format!("cannot resolve: {e}"))),
        }
    }

    /// Connect to the next address (after a refusal of the previous one).
    fn connect_next(&mut self) -> Step {
        while let Some(addr) = self.addrs.get(self.next).copied() {
            self.next += 1;
            match connect_started(&addr) {
                Ok(sock) => {
                    let fd = sock.as_raw_fd();
                    self.stage = Stage::Connecting(sock);
                    return Step::Wait { fd, read: false };
                }
                Err(e) => self.last_error = Some(Error::io(&format!("connect to {addr}"), &e)),
            }
        }
        self.stage = Stage::Over;
        Step::Failed(
            self.last_error
                .take()
                .unwrap_or_else(|| self.error(ErrorKind::Io, "no address")),
        )
    }

    /// The socket is ready: go as far as it allows.
    pub(crate) fn ready(&mut self) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Connecting(sock) => match connect_result(&sock) {
                Ok(()) => match Transport::from_connected(sock, &self.host, self.client.connector().tls()) {
                    Ok(t) => self.handshake(t),
                    Err(e) => Step::Failed(e),
                },
                Err(e) => {
                    self.last_error = Some(self.error(ErrorKind::Io, &e.to_string()));
                    drop(sock);
                    self.connect_next()
                }
            },
            Stage::Handshaking(t) => self.handshake(t),
            Stage::Authing(conn) => match conn.poll_reply(OWN_READER, Command::Auth, None) {
                Ok(None) => {
                    let fd = conn.raw_fd();
                    self.stage = Stage::Authing(conn);
                    Step::Wait { fd, read: true }
                }
                Ok(Some(_)) => self.name(conn),
                Err(e) => Step::Failed(e),
            },
            Stage::Naming(conn, reference) => match conn.poll_reply(OWN_READER, Command::StableRef, None) {
                Ok(None) => {
                    let fd = conn.raw_fd();
                    self.stage = Stage::Naming(conn, reference);
                    Step::Wait { fd, read: true }
                }
                Ok(Some(_)) => {
                    conn.record_ref(reference);
                    Step::Connected(conn)
                }
                Err(e) => Step::Failed(e),
            },
            other => {
                self.stage = other;
                Step::Resolving
            }
        }
    }

    fn handshake(&mut self, mut t: Transport) -> Step {
        match t.handshake_step(&self.host) {
            Ok(Some(read)) => {
                let fd = t.raw_fd();
                self.stage = Stage::Handshaking(t);
                Step::Wait { fd, read }
            }
            Ok(None) => {
                let connector = self.client.connector();
                let conn = Arc::new(connector.wrap(t, &self.host, self.port));
                let Some(auth) = connector.auth_request() else {
                    return self.name(conn);
                };
                match conn.start_request(&auth, OWN_READER) {
                    Ok(Started::Sent) => {
                        let fd = conn.raw_fd();
                        self.stage = Stage::Authing(conn);
                        Step::Wait { fd, read: true }
                    }
                    Ok(Started::Busy) => Step::Failed(self.error(ErrorKind::Io, "auth: connection busy")),
                    Err(e) => Step::Failed(e),
                }
            }
            Err(e) => Step::Failed(e),
        }
    }
}

impl Dial {
    /// Authenticated: in cluster mode, name the session (`stable-ref`: the
    /// replaced connection's, else a new one) before the connection is
    /// used.
    fn name(&mut self, conn: Arc<Connection>) -> Step {
        let Some(reference) = self.client.connector().stable_ref_for(self.reference.as_deref()) else {
            return Step::Connected(conn);
        };
        match conn.start_request(
            &Request::StableRef {
                reference: &reference,
            },
            OWN_READER,
        ) {
            Ok(Started::Sent) => {
                let fd = conn.raw_fd();
                self.stage = Stage::Naming(conn, reference);
                Step::Wait { fd, read: true }
            }
            Ok(Started::Busy) => Step::Failed(self.error(ErrorKind::Io, "stable-ref: connection busy")),
            Err(e) => Step::Failed(e),
        }
    }
}

fn bump_deadline(client: &ClientInner) {
    crate::metrics::bump(&client.metrics.deadline_hits);
}
