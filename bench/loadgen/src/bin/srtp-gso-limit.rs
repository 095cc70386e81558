//! The physical reference for WebRTC egress (issue 17): how many Gb/s of SRTP one core of this
//! machine can protect and send, with nothing of a WebRTC stack around it.
//!
//! `srtp-gso-limit [SECONDS] [BATCH] [PAYLOAD]` (defaults 10, 32, 1150; BATCH at most what fits
//! in 60 000 bytes, as Sluice's sends) runs two phases on the
//! calling thread, which the caller pins to one core (`taskset -c 0`):
//! 1. AES-256-GCM (SRTP's AEAD profile str0m negotiates, `SRTP_AEAD_AES_256_GCM`; aws-lc-rs, the provider Sluice
//!    uses) protection alone: a 12-byte RTP header as associated data, the payload sealed in
//!    place, a 16-byte tag. Reported as Gb/s of protected packets per second of thread CPU.
//! 2. The same, plus UDP sends of BATCH packets at a time with GSO (`UDP_SEGMENT`) to a socket
//!    on loopback that a second thread (pinned to the other core) drains. Reported as Gb/s per
//!    second of the whole sending core's busy time (/proc/stat: user, system, interrupts), as
//!    `bench/whep_fanout.sh` measures the server, loopback's receive work on that core included.
//!
//! Prints one line of `key=value` pairs.
//!
//! Unsafe code: libc calls the standard library does not wrap (thread CPU clock, affinity,
//! `UDP_SEGMENT` and `SO_RCVBUF`), each with plain values.
#![allow(unsafe_code)]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const HEADER: usize = 12;
const TAG: usize = 16;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (busy, total) jiffies of `cpu` from /proc/stat.
fn core_times(cpu: usize) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .context("no such core in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    Ok((busy, busy + v[3] + v[4]))
}

fn current_cpu() -> usize {
    // SAFETY: no arguments, returns the calling thread's core or -1.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0) as usize
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Packets {
    key: LessSafeKey,
    salt: [u8; 12],
    seq: u16,
    ssrc: u32,
    payload: Vec<u8>,
}

impl Packets {
    /// Writes one protected packet into `out` (HEADER + payload + TAG bytes), as an SRTP
    /// sender does: header, a copy of the payload, sealed in place.
    fn protect_into(&mut self, out: &mut [u8]) {
        self.seq = self.seq.wrapping_add(1);
        let (hdr, rest) = out.split_at_mut(HEADER);
        hdr[0] = 0x80;
        hdr[1] = 96;
        hdr[2..4].copy_from_slice(&self.seq.to_be_bytes());
        hdr[4..8].copy_from_slice(&(self.seq as u32 * 3000).to_be_bytes());
        hdr[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let n = self.payload.len();
        rest[..n].copy_from_slice(&self.payload);
        // RFC 7714's IV: salt XOR (ssrc, roc, seq).
        let mut iv = self.salt;
        for (i, b) in self.ssrc.to_be_bytes().iter().enumerate() {
            iv[2 + i] ^= b;
        }
        for (i, b) in self.seq.to_be_bytes().iter().enumerate() {
            iv[10 + i] ^= b;
        }
        let (body, tag_out) = rest.split_at_mut(n);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&hdr[..]), body)
            .expect("AES-GCM seal");
        tag_out[..TAG].copy_from_slice(tag.as_ref());
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let payload: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1150);
    if !(1..=64).contains(&batch) || !(16..=1400).contains(&payload) {
        bail!("BATCH 1..=64, PAYLOAD 16..=1400");
    }
    let pkt = HEADER + payload + TAG;
    // A GSO send is one UDP datagram to the kernel: at most 64 KiB (Sluice sends up to 60 000 B).
    let batch = batch.min(60_000 / pkt).max(1);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("key"));
    let mut p = Packets {
        key,
        salt: [3u8; 12],
        seq: 0,
        ssrc: 0x1234_5678,
        payload: (0..payload).map(|i| i as u8).collect(),
    };
    let send_cpu = current_cpu();
    let mut buf = vec![0u8; pkt * batch];

    // Phase 1: protection alone.
    let t0 = thread_cpu();
    let wall = Instant::now();
    let mut bytes = 0u64;
    while wall.elapsed().as_secs_f64() < secs / 2.0 {
        for chunk in buf.chunks_mut(pkt) {
            p.protect_into(chunk);
        }
        bytes += (pkt * batch) as u64;
    }
    let cpu = (thread_cpu() - t0).as_secs_f64();
    let seal_gbps = bytes as f64 * 8.0 / cpu / 1e9;

    // Phase 2: protection and GSO sends to loopback, drained on the other core.
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let fd = rx.as_raw_fd();
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a valid int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let dest = rx.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let other = if send_cpu == 0 { 1 } else { 0 };
    let reader = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin(other);
            let mut b = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut b) {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(dest)?;
    let seg: libc::c_int = pkt as libc::c_int;
    // SAFETY: setsockopt with a valid int option value (UDP_SEGMENT = 103).
    let gso = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::SOL_UDP,
            103,
            &seg as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    let send_batch = if gso { batch } else { 1 };
    let (b0, t0) = core_times(send_cpu)?;
    let wall = Instant::now();
    let mut sent = 0u64;
    let mut full = 0u64;
    while wall.elapsed().as_secs_f64() < secs / 2.0 {
        for chunk in buf.chunks_mut(pkt) {
            p.protect_into(chunk);
        }
        for run in buf.chunks(pkt * send_batch) {
            match tx.send(run) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => full += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => full += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let secs2 = wall.elapsed().as_secs_f64();
    let (b1, t1) = core_times(send_cpu)?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
    let send_gbps = sent as f64 * 8.0 / secs2 / 1e9;
    println!(
        "packet_bytes={pkt} batch={send_batch} gso={gso} seal_gbps_per_core={seal_gbps:.2} \
         sent_gbps={send_gbps:.2} core{send_cpu}_busy={:.1}% send_gbps_per_core={:.2} \
         received_gbps={:.2} full={full}",
        busy * 100.0,
        send_gbps / busy.max(1e-9),
        received.load(Ordering::Relaxed) as f64 * 8.0 / secs2 / 1e9,
    );
    Ok(())
}
