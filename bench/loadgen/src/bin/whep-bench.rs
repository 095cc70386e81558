//! WHEP fan-out load generator: N WebRTC viewers of one path in one process, on str0m (the
//! library the server uses).
//!
//! Each viewer makes a real offer (recvonly H.264 + Opus), POSTs it to the WHEP endpoint, runs
//! ICE (full, controlling) and the DTLS handshake, then keeps the session alive. To stay light,
//! SRTP media packets are counted but not decrypted (only STUN, DTLS and RTCP go into str0m), so
//! the load generator costs far less than the server it measures.
//!
//! Usage: whep-bench URL VIEWERS SECONDS   (URL: http://127.0.0.1:8889/live/bench/whep)
//! Prints one line: viewers connected, Mb/s received in total, and per-viewer minimum.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Viewer {
    rtc: Rtc,
    sock: UdpSocket,
    bytes: u64,
    connected: bool,
}

fn post_offer(url: &str, sdp: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest.split_once('/').context("URL path")?;
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("HTTP response")?;
    if !head.starts_with("HTTP/1.1 201") {
        bail!("WHEP refused: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

fn new_viewer(url: &str, now: Instant) -> anyhow::Result<Viewer> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_nonblocking(true)?;
    let mut rtc = Rtc::builder().build(now);
    rtc.add_local_candidate(Candidate::host(sock.local_addr()?, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending): (_, SdpPendingOffer) = api.apply().context("offer")?;
    let answer = post_offer(url, &offer.to_sdp_string())?;
    let answer = SdpAnswer::from_sdp_string(&answer)?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    Ok(Viewer {
        rtc,
        sock,
        bytes: 0,
        connected: false,
    })
}

/// STUN, DTLS and RTCP go to str0m; SRTP media is only counted.
fn is_media(b: &[u8]) -> bool {
    b.len() > 1 && (128..=191).contains(&b[0]) && !(200..=207).contains(&b[1])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        bail!("usage: whep-bench URL VIEWERS SECONDS");
    }
    let url = &args[1];
    let n: usize = args[2].parse()?;
    let secs: u64 = args[3].parse()?;
    str0m::crypto::from_feature_flags().install_process_default();
    let mut viewers = Vec::with_capacity(n);
    let t_start = Instant::now();
    let mut buf = vec![0u8; 2048];
    for _ in 0..n {
        viewers.push(new_viewer(url, Instant::now())?);
        // Keep the ones already created alive while the others are set up.
        pump(&mut viewers, &mut buf)?;
    }
    let setup = t_start.elapsed();
    // Let everyone connect, then measure a window.
    let warm = Instant::now() + Duration::from_secs(3);
    while Instant::now() < warm {
        pump(&mut viewers, &mut buf)?;
    }
    let connected = viewers.iter().filter(|v| v.connected).count();
    // The benchmark script samples the server's CPU between this line and the result.
    println!("window-start connected={connected}");
    let _ = std::io::stdout().flush();
    let before: Vec<u64> = viewers.iter().map(|v| v.bytes).collect();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    while Instant::now() < end {
        pump(&mut viewers, &mut buf)?;
    }
    let dt = t0.elapsed().as_secs_f64();
    let got: Vec<f64> = viewers
        .iter()
        .zip(&before)
        .map(|(v, b)| (v.bytes - b) as f64 * 8.0 / 1e6 / dt)
        .collect();
    let total: f64 = got.iter().sum();
    let min = got.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "viewers={n} connected={connected} setup_s={:.2} total_mbps={total:.1} min_viewer_mbps={min:.3}",
        setup.as_secs_f64()
    );
    Ok(())
}

/// One round over every viewer: read what arrived, feed str0m, send what it wants, sleep a bit
/// if nothing happened.
fn pump(viewers: &mut [Viewer], buf: &mut [u8]) -> anyhow::Result<()> {
    let mut busy = false;
    let now = Instant::now();
    for v in viewers.iter_mut() {
        for _ in 0..256 {
            match v.sock.recv_from(buf) {
                Ok((len, src)) => {
                    busy = true;
                    v.bytes += len as u64;
                    if is_media(&buf[..len]) {
                        continue;
                    }
                    let Ok(contents) = (&buf[..len]).try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: src,
                            destination: v.sock.local_addr()?,
                            contents,
                        },
                    );
                    let _ = v.rtc.handle_input(input);
                }
                Err(_) => break,
            }
        }
        let _ = v.rtc.handle_input(Input::Timeout(now));
        loop {
            match v.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let dst: SocketAddr = t.destination;
                    let _ = v.sock.send_to(&t.contents, dst);
                }
                Ok(Output::Event(Event::Connected)) => v.connected = true,
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
    }
    if !busy {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
