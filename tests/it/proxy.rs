//! A TCP proxy the tests can cut, black-hole and restore: a database outage
//! on demand, of the kinds networks have.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Forwards.
    Up = 0,
    /// Refuses: connections are closed as soon as made.
    Down = 1,
    /// Accepts connections and holds them, forwarding and answering
    /// nothing: a server that stopped answering, or a dropped route.
    BlackHole = 2,
    /// Tears down when the stopping end is done.
    Stopped = 3,
}

struct Shared {
    target: SocketAddr,
    mode: AtomicU8,
    open: Mutex<Vec<TcpStream>>,
    /// Client bytes that, once seen, cut the proxy (see `cut_on`).
    trigger: Mutex<Option<&'static [u8]>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Up,
            1 => Mode::Down,
            2 => Mode::BlackHole,
            _ => Mode::Stopped,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.set(Mode::Down);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Forwards connections from a local port to `target` while up.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub(crate) fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            mode: AtomicU8::new(Mode::Up as u8),
            open: Mutex::new(Vec::new()),
            trigger: Mutex::new(None),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    match shared.mode() {
                        Mode::Stopped => return,
                        Mode::Down => {
                            let _ = client.shutdown(Shutdown::Both);
                        }
                        // Held open, never read: the peer waits forever.
                        Mode::BlackHole => shared.open.lock().unwrap().push(client),
                        Mode::Up => connect(&shared, client),
                    }
                }
            })
        };
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` (of a server on `port`) through this proxy instead.
    pub(crate) fn url(&self, url: &str, port: u16) -> String {
        let mut through = url.replace(&format!(":{port}/"), &format!(":{}/", self.port()));
        assert_ne!(through, url);
        if through.starts_with("mysql") {
            // Else the driver moves to the server's Unix socket, past the proxy.
            through.push_str("?prefer_socket=false");
        }
        through
    }

    /// Breaks every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.shared.cut();
    }

    /// Forwards nothing and answers nothing, on open connections and new
    /// ones, which it accepts and holds.
    pub(crate) fn black_hole(&self) {
        self.shared.set(Mode::BlackHole);
    }

    /// Cuts (as [`cut`](Self::cut)) as soon as a client sends `bytes`: an
    /// outage at a chosen point of a conversation.
    pub(crate) fn cut_on(&self, bytes: &'static [u8]) {
        *self.shared.trigger.lock().unwrap() = Some(bytes);
    }

    /// Accepts and forwards connections again.
    pub(crate) fn restore(&self) {
        *self.shared.trigger.lock().unwrap() = None;
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.shared.set(Mode::Up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.shared.set(Mode::Stopped);
        // Wake the acceptor so that it sees `Stopped`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn connect(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(server) = TcpStream::connect(shared.target) else {
        return;
    };
    let mut open = shared.open.lock().unwrap();
    open.push(client.try_clone().unwrap());
    open.push(server.try_clone().unwrap());
    pipe(
        shared.clone(),
        client.try_clone().unwrap(),
        server.try_clone().unwrap(),
        true,
    );
    pipe(shared.clone(), server, client, false);
}

/// Copies `from` into `to` on a thread until either side closes; swallows
/// what it reads while black-holed.
fn pipe(shared: Arc<Shared>, mut from: TcpStream, mut to: TcpStream, from_client: bool) {
    thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let trigger = *shared.trigger.lock().unwrap();
            if from_client && trigger.is_some_and(|t| buf[..n].windows(t.len()).any(|w| w == t)) {
                shared.cut();
                break;
            }
            match shared.mode() {
                Mode::Up => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Mode::BlackHole => {}
                Mode::Down | Mode::Stopped => break,
            }
        }
        if shared.mode() != Mode::BlackHole {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        }
    });
}
