//! A TCP proxy that injects network faults between a node and one of its services.
//!
//! A node is given the proxy's address instead of its Redis's or its database's; the test
//! then switches the proxy between three behaviours ([`Fault`]):
//!
//! - [`Fault::Pass`]: bytes flow both ways.
//! - [`Fault::Blackhole`]: connections stay open and new ones are accepted, but no byte
//!   moves in either direction; bytes already read are held and delivered after the heal,
//!   as TCP delays (and does not lose) what a short partition swallows. This is the hang
//!   that a closed connection would not reveal: only a timeout notices it.
//! - [`Fault::Refuse`]: open connections are closed and new ones refused (the port is not
//!   listened on), as when the service is down.
//!
//! The proxy runs on a thread and runtime of its own, so it keeps forwarding while the test
//! blocks (starting a node that connects through it) or its runtime is busy.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// What the proxy does with the bytes (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Keep connections open, forward nothing.
    Blackhole,
    /// Close open connections, refuse new ones.
    Refuse,
}

/// A switch of behaviour, acknowledged once in effect (or with why it could not be).
type Command = (Fault, oneshot::Sender<Result<(), String>>);

/// A proxy from a loopback port to `upstream`. Dropping it stops it and closes every
/// connection.
pub struct FaultProxy {
    addr: SocketAddr,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long re-listening on the proxy's port may take after [`Fault::Refuse`].
const REBIND_FOR: Duration = Duration::from_secs(5);

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`, in [`Fault::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind the proxy to 127.0.0.1:0");
                    let addr = listener.local_addr().expect("proxy address");
                    let _ = bound.send(addr);
                    serve(listener, addr, upstream, receiver).await;
                });
            })
            .expect("spawn the proxy thread");
        let addr = addr.recv().expect("the proxy thread reports its address");
        FaultProxy {
            addr,
            commands: Some(commands),
            thread: Some(thread),
        }
    }

    /// The address to give the node instead of the upstream's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switch to `fault`; returns once it is in effect (a refused port is closed, a passing
    /// one listened on again).
    pub async fn set(&self, fault: Fault) {
        let (ack, done) = oneshot::channel();
        self.commands
            .as_ref()
            .expect("the proxy runs")
            .send((fault, ack))
            .expect("the proxy thread runs");
        if let Err(error) = done.await.expect("the proxy acknowledges") {
            panic!("the proxy cannot switch to {fault:?}: {error}");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Closing the command channel ends `serve`; the runtime's end drops every
        // connection.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept connections and obey commands until the [`FaultProxy`] is dropped.
async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let (mode, _) = watch::channel(Fault::Pass);
    let mut listener = Some(listener);
    loop {
        let accept = async {
            match &listener {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => {
                let Some((fault, ack)) = command else { return };
                mode.send_replace(fault);
                let result = match (fault, &listener) {
                    (Fault::Refuse, _) => {
                        listener = None;
                        Ok(())
                    }
                    (_, None) => rebind(addr).await.map(|l| listener = Some(l)),
                    (_, Some(_)) => Ok(()),
                };
                let _ = ack.send(result);
            }
            accepted = accept => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, upstream, mode.subscribe()));
                }
            }
        }
    }
}

/// Listen on `addr` again (retrying while the port lingers).
async fn rebind(addr: SocketAddr) -> Result<TcpListener, String> {
    let deadline = tokio::time::Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) if tokio::time::Instant::now() > deadline => {
                return Err(format!("cannot listen on {addr} again: {error}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One client connection: connected upstream once passing, then forwarded both ways.
async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Fault>) {
    // Accepted during a blackhole, it waits as a connection attempt into a partition would.
    if !until_passing(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(client_read, server_write, mode.clone()),
        pipe(server_read, client_write, mode),
    );
}

/// Copy `from` to `to` while the proxy passes; hold while blackholed; stop when refused.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !until_passing(&mut mode).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            // The mode changed while waiting for bytes: look at it before reading on.
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as a blackhole began are held until the heal, not dropped.
        if !until_passing(&mut mode).await {
            return;
        }
        tokio::select! {
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
            () = until_refused(&mut mode) => return,
        }
    }
}

/// Wait while blackholed: true once passing, false when refused (or the proxy stops).
async fn until_passing(mode: &mut watch::Receiver<Fault>) -> bool {
    loop {
        let fault = *mode.borrow_and_update();
        match fault {
            Fault::Pass => return true,
            Fault::Refuse => return false,
            Fault::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Return once the proxy refuses (or stops).
async fn until_refused(mode: &mut watch::Receiver<Fault>) {
    loop {
        if *mode.borrow_and_update() == Fault::Refuse || mode.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that a forwarded byte would have arrived on any machine; it is only
    /// ever used to show that nothing arrives.
    const QUIET: Duration = Duration::from_millis(300);
    /// Generous bound for what must arrive.
    const ARRIVES: Duration = Duration::from_secs(10);

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        tokio::time::timeout(ARRIVES, stream.read_exact(&mut buf))
            .await
            .expect("the bytes arrive")
            .expect("read");
        buf
    }

    async fn nothing_arrives(stream: &mut TcpStream) {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(QUIET, stream.read(&mut buf)).await;
        assert!(read.is_err(), "a blackholed connection delivered {read:?}");
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_both_ways_on_open_and_new_connections_until_the_heal() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        assert_eq!(read_exactly(&mut open, 4).await, b"ping");

        proxy.set(Fault::Blackhole).await;
        open.write_all(b"held").await.unwrap();
        nothing_arrives(&mut open).await;
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        new.write_all(b"late").await.unwrap();
        nothing_arrives(&mut new).await;

        proxy.set(Fault::Pass).await;
        assert_eq!(read_exactly(&mut open, 4).await, b"held", "held, not lost");
        assert_eq!(read_exactly(&mut new, 4).await, b"late");
    }

    #[tokio::test]
    async fn refuse_closes_open_connections_and_refuses_new_ones_until_pass() {
        let proxy = FaultProxy::start(echo_server().await);
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        assert_eq!(read_exactly(&mut open, 4).await, b"ping");

        proxy.set(Fault::Refuse).await;
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(ARRIVES, open.read(&mut buf))
            .await
            .expect("the open connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
        let refused = TcpStream::connect(proxy.addr()).await;
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );

        proxy.set(Fault::Pass).await;
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"back").await.unwrap();
        assert_eq!(read_exactly(&mut again, 4).await, b"back");
    }
}
