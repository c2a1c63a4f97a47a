//! The AF_PACKET socket layer2 listens and answers on ([`PacketSocket`]): opened with a kernel
//! filter attached before it is bound to its interface, read with a blocking `recv` (no `poll`
//! first) and written with a plain `send` on the bound socket, so a reply costs two system calls
//! after the wakeup.
//!
//! The classic BPF program passes only received (not outgoing) ARP frames and ICMPv6 Neighbor
//! Solicitations, so a flood of other traffic never reaches user space. Solicited-node multicast
//! groups are joined per announced IPv6 address so NS frames arrive without promiscuous mode.
//!
//! Must not: parse frames or decide anything; it only wraps system calls.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::packet::Mac;

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_DROP_MEMBERSHIP: libc::c_int = 2;
const PACKET_MR_MULTICAST: libc::c_ushort = 0;
const SO_ATTACH_FILTER: libc::c_int = 26;

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: loads the packet type (`PACKET_OUTGOING` = 4).
const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
const PACKET_OUTGOING: u32 = 4;

/// One classic BPF instruction: (code, jump if true, jump if false, k).
pub type Insn = (u16, u8, u8, u32);

/// The filter: accept incoming ARP, and incoming IPv6 whose next header is ICMPv6 (58) with type
/// 135 (Neighbor Solicitation); drop everything else, and everything this host sends.
pub const FILTER: [Insn; 11] = [
    (BPF_LD_W_ABS, 0, 0, AD_PKTTYPE),   // 0: A = pkttype
    (BPF_JEQ_K, 8, 0, PACKET_OUTGOING), // 1: outgoing -> 10 drop
    (BPF_LD_H_ABS, 0, 0, 12),           // 2: A = ethertype
    (BPF_JEQ_K, 5, 0, 0x0806),          // 3: ARP -> 9 accept
    (BPF_JEQ_K, 0, 5, 0x86dd),          // 4: not IPv6 -> 10 drop
    (BPF_LD_B_ABS, 0, 0, 14 + 6),       // 5: A = IPv6 next header
    (BPF_JEQ_K, 0, 3, 58),              // 6: not ICMPv6 -> 10 drop
    (BPF_LD_B_ABS, 0, 0, 14 + 40),      // 7: A = ICMPv6 type
    (BPF_JEQ_K, 0, 1, 135),             // 8: not NS -> 10 drop
    (BPF_RET_K, 0, 0, 0x0004_0000),     // 9: accept (whole frame)
    (BPF_RET_K, 0, 0, 0),               // 10: drop
];

/// Most IPv4 addresses [`filter_for`] matches one by one (classic BPF jumps are 8-bit); with
/// more, every ARP frame is passed and user space sorts them out.
pub const MAX_FILTERED_V4: usize = 200;

const BPF_LD_W_ABS_ARP_TPA: u32 = 14 + 24;

/// The filter for a socket answering `owned_v4`: like [`FILTER`], but ARP frames pass only when
/// their target protocol address is one of `owned_v4`, so a flood of ARP requests for other
/// addresses is dropped in the kernel (issue 8: at ~50k frames/s they crowded our requests out
/// of the socket queue). More than [`MAX_FILTERED_V4`] addresses: [`FILTER`].
pub fn filter_for(owned_v4: &[std::net::Ipv4Addr]) -> Vec<Insn> {
    let n = owned_v4.len();
    if n > MAX_FILTERED_V4 {
        return FILTER.to_vec();
    }
    // Layout: 0-3 header checks; 4 load the ARP target; 5..5+n compare; 5+n drop; 6+n accept;
    // 7+n.. the IPv6 checks of FILTER (its instructions 4..=10).
    let n8 = n as u8; // n <= 200
    let mut p: Vec<Insn> = vec![
        (BPF_LD_W_ABS, 0, 0, AD_PKTTYPE),           // 0: A = pkttype
        (BPF_JEQ_K, n8 + 3, 0, PACKET_OUTGOING),    // 1: outgoing -> 5+n drop
        (BPF_LD_H_ABS, 0, 0, 12),                   // 2: A = ethertype
        (BPF_JEQ_K, 0, n8 + 3, 0x0806),             // 3: not ARP -> 7+n IPv6 checks
        (BPF_LD_W_ABS, 0, 0, BPF_LD_W_ABS_ARP_TPA), // 4: A = ARP target address
    ];
    for (i, ip) in owned_v4.iter().enumerate() {
        // 5+i: owned -> 6+n accept
        p.push((BPF_JEQ_K, (n - i) as u8, 0, u32::from(*ip)));
    }
    p.push((BPF_RET_K, 0, 0, 0)); // 5+n: drop
    p.push((BPF_RET_K, 0, 0, 0x0004_0000)); // 6+n: accept
    p.extend_from_slice(&FILTER[4..]);
    p
}

/// Replaces the filter on `fd` (a packet socket) with `insns`; the kernel swaps it atomically.
pub fn attach(fd: RawFd, insns: &[Insn]) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = insns
        .iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel copies the program.
    // An invalid fd only yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens an AF_PACKET raw socket that receives nothing until bound (protocol 0) and attaches
/// [`FILTER`]. [`PacketSocket::open`] then binds it to one interface.
pub fn open_filtered() -> io::Result<RawFd> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Err(err) = attach(fd, &FILTER) {
        // SAFETY: `fd` was opened above and is not shared with anyone yet.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    Ok(fd)
}

/// A packet socket bound to one interface (every protocol, [`FILTER`] attached until
/// [`attach`] narrows it), closed on drop. Safe to use from several threads (the kernel
/// serialises `send`s).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket with [`FILTER`], binds it to interface `ifindex` and sets a receive
    /// timeout of `rx_timeout`, so a blocked reader regularly gets the chance to stop.
    pub fn open(ifindex: u32, rx_timeout: Duration) -> io::Result<PacketSocket> {
        let raw = open_filtered()?;
        // SAFETY: `raw` was just opened by us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `addr` is a valid `sockaddr_ll` of the given size living across the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: rx_timeout.as_secs() as libc::time_t,
            tv_usec: rx_timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a valid `struct timeval` living across the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// The descriptor, for [`attach`] and [`multicast`].
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Blocks until a frame arrives and copies it into `buf` (truncated to its length); the
    /// receive timeout yields an error of kind `WouldBlock`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::recv(self.raw(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends one whole Ethernet frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the whole call.
        let n = unsafe { libc::send(self.raw(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [libc::c_uchar; 8],
}

/// Joins (`join = true`) or leaves the link-layer multicast group `mac` on interface `ifindex`
/// for socket `fd`. The kernel counts joins per socket, so each join needs one leave.
pub fn multicast(fd: RawFd, ifindex: u32, mac: Mac, join: bool) -> io::Result<()> {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac.0);
    let mreq = PacketMreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: PACKET_MR_MULTICAST,
        mr_alen: 6,
        mr_address: addr,
    };
    let op = if join {
        PACKET_ADD_MEMBERSHIP
    } else {
        PACKET_DROP_MEMBERSHIP
    };
    // SAFETY: `mreq` is a valid `struct packet_mreq` living across the call; `fd` is a packet
    // socket owned by the caller's channel (an invalid fd only yields EBADF).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_PACKET,
            op,
            std::ptr::addr_of!(mreq).cast(),
            std::mem::size_of::<PacketMreq>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions [`FILTER`] uses.
    fn run(frame: &[u8], pkttype: u32) -> u32 {
        run_prog(&FILTER, frame, pkttype)
    }

    fn run_prog(prog: &[Insn], frame: &[u8], pkttype: u32) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0;
        loop {
            let (code, jt, jf, k) = prog[pc];
            let load = |n: usize| -> Option<u32> {
                let at = k as usize;
                let b = frame.get(at..at + n)?;
                Some(b.iter().fold(0, |acc, x| (acc << 8) | u32::from(*x)))
            };
            match code {
                BPF_LD_W_ABS if k == AD_PKTTYPE => a = pkttype,
                BPF_LD_W_ABS => match load(4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                BPF_LD_H_ABS => match load(2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                BPF_LD_B_ABS => match load(1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                BPF_JEQ_K => {
                    pc += usize::from(if a == k { jt } else { jf });
                }
                BPF_RET_K => return k,
                other => panic!("opcode {other:#x} not interpreted"),
            }
            pc += 1;
        }
    }

    fn frame(ethertype: u16, next_header: u8, icmp_type: u8) -> Vec<u8> {
        let mut f = vec![0u8; 86];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[20] = next_header;
        f[54] = icmp_type;
        f
    }

    #[test]
    fn filter_passes_only_incoming_arp_and_neighbor_solicitations() {
        const HOST: u32 = 0;
        const BROADCAST: u32 = 1;
        const MULTICAST: u32 = 2;
        assert_ne!(run(&frame(0x0806, 0, 0), BROADCAST), 0, "ARP request");
        assert_ne!(run(&frame(0x86dd, 58, 135), MULTICAST), 0, "NS");
        assert_ne!(run(&frame(0x86dd, 58, 135), HOST), 0, "unicast NS");
        assert_eq!(run(&frame(0x0806, 0, 0), PACKET_OUTGOING), 0, "own ARP");
        assert_eq!(run(&frame(0x86dd, 58, 136), MULTICAST), 0, "NA");
        assert_eq!(run(&frame(0x86dd, 58, 128), HOST), 0, "echo request");
        assert_eq!(run(&frame(0x86dd, 6, 135), HOST), 0, "TCP");
        assert_eq!(run(&frame(0x0800, 58, 135), HOST), 0, "IPv4");
        assert_eq!(run(&frame(0x86dd, 58, 135)[..40], HOST), 0, "truncated");
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = frame(0x0806, 0, 0);
        f[38..42].copy_from_slice(&target);
        f
    }

    #[test]
    fn per_address_filter_passes_arp_only_for_owned_addresses() {
        const BROADCAST: u32 = 1;
        let owned: Vec<std::net::Ipv4Addr> = (0..MAX_FILTERED_V4)
            .map(|i| std::net::Ipv4Addr::new(198, 51, 100, i as u8))
            .collect();
        for n in [0, 1, 2, 17, MAX_FILTERED_V4] {
            let prog = filter_for(&owned[..n]);
            for ip in &owned[..n] {
                assert_ne!(
                    run_prog(&prog, &arp_request(ip.octets()), BROADCAST),
                    0,
                    "{n}: {ip}"
                );
            }
            assert_eq!(
                run_prog(&prog, &arp_request([192, 0, 2, 7]), BROADCAST),
                0,
                "{n}"
            );
            assert_eq!(
                run_prog(&prog, &arp_request([198, 51, 100, 250]), BROADCAST),
                0,
                "{n}"
            );
            if let Some(ip) = owned[..n].first() {
                assert_eq!(
                    run_prog(&prog, &arp_request(ip.octets()), PACKET_OUTGOING),
                    0,
                    "{n}: own ARP"
                );
            }
            // NDP handling is FILTER's.
            assert_ne!(
                run_prog(&prog, &frame(0x86dd, 58, 135), BROADCAST),
                0,
                "{n}: NS"
            );
            assert_eq!(
                run_prog(&prog, &frame(0x86dd, 58, 136), BROADCAST),
                0,
                "{n}: NA"
            );
            assert_eq!(
                run_prog(&prog, &frame(0x0800, 0, 0), BROADCAST),
                0,
                "{n}: IPv4"
            );
            assert_eq!(
                run_prog(&prog, &arp_request(owned[0].octets())[..30], BROADCAST),
                0
            );
        }
        // Too many addresses for 8-bit jumps: every ARP frame passes.
        let many: Vec<std::net::Ipv4Addr> = (0..=MAX_FILTERED_V4 as u32)
            .map(|i| std::net::Ipv4Addr::from(0xc633_6400 + i))
            .collect();
        let prog = filter_for(&many);
        assert_ne!(run_prog(&prog, &arp_request([192, 0, 2, 7]), BROADCAST), 0);
    }
}
