//! Slow and idle clients against the real binary: a request head or body that never
//! finishes, and a kept-alive connection left idle, are closed by their deadlines; past
//! `max_connections` new clients wait, and are served once a slot frees.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::Server;

/// Generous: the deadlines under test are 1 s; this only stops a broken server from hanging
/// the test.
const READ_LIMIT: Duration = Duration::from_secs(20);

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
    stream
}

/// Read until the server closes the connection; what it sent before closing.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&seen).into_owned()
            }
            Err(e) => panic!(
                "the server kept the connection open ({e}); it sent: {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

fn quick_deadlines() -> Server {
    Server::start_with_env(&[
        ("TOKENGATE_HEADER_TIMEOUT", "1s"),
        ("TOKENGATE_BODY_TIMEOUT", "1s"),
    ])
}

#[test]
fn a_request_head_that_never_ends_is_closed() {
    let server = quick_deadlines();
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let sent = read_until_closed(&mut slow);
    assert!(!sent.contains("200 OK"), "{sent}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let server = quick_deadlines();
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The first answer arrives, then the connection idles until the server closes it.
    let sent = read_until_closed(&mut idle);
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
}

#[test]
fn a_request_body_that_stops_arriving_gets_400_and_is_closed() {
    let server = quick_deadlines();
    let mut slow = connect(&server);
    slow.write_all(
        b"POST /v1/auth/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .unwrap();
    let sent = read_until_closed(&mut slow);
    assert!(sent.starts_with("HTTP/1.1 400"), "{sent}");
}

#[test]
fn past_the_connection_limit_clients_wait_for_a_free_slot() {
    // Long header deadline: the held connection keeps its slot for the whole test.
    let server = Server::start_with_env(&[
        ("TOKENGATE_MAX_CONNECTIONS", "1"),
        ("TOKENGATE_HEADER_TIMEOUT", "60s"),
    ]);
    let mut held = connect(&server);
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Make sure the held connection was accepted before the waiting one arrives.
    std::thread::sleep(Duration::from_millis(300));

    let mut waiting = connect(&server);
    waiting
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served past the limit: {early:?}"
    );

    // The slot frees: the waiting client is served.
    drop(held);
    waiting.set_read_timeout(Some(READ_LIMIT)).unwrap();
    let sent = read_until_closed(&mut waiting);
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
}
