//! Binding the listeners. `[::]` is meant as "every address, IPv4 and IPv6": Linux gives that only
//! while `net.ipv6.bindv6only` is 0, and other systems (and hardened hosts) default to IPv6 only,
//! where a `[::]:7443` broker would silently stop answering IPv4 clients. So the socket is made
//! here with `IPV6_V6ONLY` turned off explicitly, and IPv4 clients arrive as IPv4-mapped
//! addresses (`::ffff:10.0.0.5`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`), as
/// tokio's own `TcpListener::bind` asks for.
const BACKLOG: i32 = 1024;

/// A listener on `addr`; an IPv6 address takes IPv4 connections too (`IPV6_V6ONLY` off). Must be
/// called inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // As tokio and the standard library do on Unix: a restarted broker rebinds its port at once
    // instead of waiting out the previous one's TIME_WAIT connections.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// An accept loop running in the background (the admin port, the issuer's documents): the
/// address it listens on and the way to stop it. Dropped without [`Background::stop`] (the
/// broker failed to start after this listener did), it aborts the loop, so the port is not kept.
#[derive(Debug)]
pub struct Background {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Background {
    /// Binds `addr` like [`bind`] and spawns `accept_loop` on the listener; the loop should end
    /// when its receiver fires.
    pub fn spawn<F, Fut>(addr: SocketAddr, accept_loop: F) -> io::Result<Background>
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = bind(addr)?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, stopped));
        Ok(Background {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Whether this machine's loopback has IPv6 (containers often have it off).
    fn ipv6_loopback() -> bool {
        std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
    }

    /// Connects to `port` on `ip`, accepts on `listener` and sends one byte across: the accepted
    /// peer's address is returned.
    async fn round_trip(listener: &TcpListener, ip: IpAddr) -> SocketAddr {
        let port = listener.local_addr().unwrap().port();
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(SocketAddr::new(ip, port)),
            listener.accept()
        );
        let mut client = client.unwrap();
        let (mut server, peer) = accepted.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        peer
    }

    #[tokio::test]
    async fn the_ipv6_any_address_takes_ipv4_clients_with_v6only_off() {
        if !ipv6_loopback() {
            eprintln!("skipped: this machine's loopback has no IPv6");
            return;
        }
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        // Off on the socket itself, so the host's net.ipv6.bindv6only default does not matter.
        assert!(!socket2::SockRef::from(&listener).only_v6().unwrap());
        let v4 = round_trip(&listener, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        let IpAddr::V6(mapped) = v4.ip() else {
            panic!("an IPv4 client of [::] shows as IPv4-mapped IPv6, got {v4}");
        };
        assert_eq!(mapped.to_ipv4_mapped(), Some(Ipv4Addr::LOCALHOST), "{v4}");
        let v6 = round_trip(&listener, IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
        assert_eq!(v6.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn an_ipv4_address_binds_as_before() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(listener.local_addr().unwrap().is_ipv4());
        let peer = round_trip(&listener, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_not_a_second_listener() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        assert_eq!(
            bind(taken).unwrap_err().kind(),
            io::ErrorKind::AddrInUse,
            "SO_REUSEADDR must not let two brokers share a port"
        );
    }
}
