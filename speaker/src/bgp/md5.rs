//! TCP MD5 signatures (RFC 2385) on a socket before connect: the one `setsockopt` libc and
//! socket2 do not wrap.
//!
//! Must not: log the key or do anything else with the socket.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Longest key Linux accepts (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_KEY: usize = 80;

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY],
}

/// Sets the MD5 key for segments to and from `peer` on `socket`.
pub fn set_md5(socket: &socket2::Socket, peer: SocketAddr, key: &[u8]) -> std::io::Result<()> {
    if key.len() > MAX_KEY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("password is {} bytes, at most {MAX_KEY}", key.len()),
        ));
    }
    let peer = socket2::SockAddr::from(peer);
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = (peer.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `peer.as_ptr()` points to `peer.len()` initialised bytes of a sockaddr, and `addr`
    // has room for `len` bytes (clamped to its size); the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            peer.as_ptr().cast::<u8>(),
            (&mut addr as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    let mut sig = TcpMd5Sig {
        addr,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a properly laid out `struct tcp_md5sig` living for the call; the length
    // passed is its exact size; the fd is owned by `socket` and open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_has_the_kernel_size() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn key_is_accepted_by_the_kernel_and_long_keys_refused() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let peer: SocketAddr = "127.0.0.1:179".parse().unwrap();
        set_md5(&s, peer, b"secret").unwrap();
        assert!(set_md5(&s, peer, &[b'x'; 81]).is_err());
    }
}
