//! Who is on the other end of a loopback connection: the user that owns the client's socket,
//! read from the kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`).
//!
//! `GET /auth` hands upstream credentials to the node's overlaybd snapshotter, which runs as
//! root. Being on loopback is not enough to ask (any local user, a sidecar, a port-forward
//! arrive from 127.0.0.1): the client's socket must belong to root or to the user acr runs as.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;

/// The uid acr runs as.
pub fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether `peer` may ask for credentials: a loopback client whose socket is root's or acr's.
pub fn is_trusted_local(peer: SocketAddr) -> bool {
    if !peer.ip().is_loopback() && !is_mapped_loopback(peer.ip()) {
        return false;
    }
    match socket_owner(peer) {
        Some(uid) => uid == 0 || Some(uid) == own_uid(),
        None => false,
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// The uid owning the TCP socket whose local address is `peer` (the client's end of a
/// connection to acr), from the socket tables of acr's network namespace.
///
/// Only connected sockets count (a listener on the same port is not the client), and when
/// several connected sockets have that local address (another server's accepted connections on
/// a port equal to the client's ephemeral one), their owners must agree: ambiguity is nobody.
pub fn socket_owner(peer: SocketAddr) -> Option<u32> {
    const ESTABLISHED: &str = "01";
    let mut owner: Option<u32> = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
            if fields.len() < 8 || fields[3] != ESTABLISHED {
                continue;
            }
            if parse_address(fields[1]).is_some_and(|a| same_endpoint(a, peer)) {
                let uid: u32 = fields[7].parse().ok()?;
                match owner {
                    Some(seen) if seen != uid => return None,
                    _ => owner = Some(uid),
                }
            }
        }
    }
    owner
}

fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// `0100007F:1F90` (IPv4, each 32-bit word in host order, little-endian here) or 32 hex
/// digits for IPv6, then the port in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    let ip = match ip.len() {
        8 => IpAddr::from(word(ip)?.to_be_bytes()),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4]
                    .copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?.to_be_bytes());
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_the_kernel_tables() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_address("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
            assert_eq!(
                parse_address("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
        assert_eq!(parse_address("zz:1"), None);
    }

    #[test]
    fn a_local_client_is_found_with_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(socket_owner(peer), own_uid());
        assert!(is_trusted_local(peer));
        assert!(!is_trusted_local("10.0.0.1:1234".parse().unwrap()));
        // A port nobody holds is nobody's.
        assert_eq!(socket_owner("127.0.0.1:1".parse().unwrap()), None);
    }
}
