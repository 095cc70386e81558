//! The least a recorder can spend writing media to disk, as a reference for `bench/record.sh`:
//! FILES files appended at BITRATE each, one burst per INTERVAL (a recorder's fragment), with
//! nothing else. Each burst copies its bytes from a large source buffer (the frames as received
//! are not aligned for direct I/O: one copy is needed) into an aligned buffer and writes the
//! whole blocks with `O_DIRECT`; the partial block waits in memory for the next burst (a real
//! recorder also makes it readable at once). `--no-copy` writes the aligned buffer as it is: what
//! writing would cost if frames arrived aligned. One thread, no runtime.
//!
//! Usage: `disk-floor DIR FILES BITRATE SECONDS [--interval-ms 1000] [--no-copy]`; prints one
//! JSON object (bytes written, write calls, CPU seconds of the process).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const SOURCE: usize = 64 << 20;

fn cpu_seconds() -> f64 {
    // utime + stime of the process, in clock ticks (fields 14 and 15 of /proc/self/stat).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        anyhow::bail!("usage: disk-floor DIR FILES BITRATE SECONDS [--interval-ms 1000] [--no-copy]");
    }
    let dir = PathBuf::from(&args[1]);
    let files: usize = args[2].parse()?;
    let bitrate: f64 = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let mut interval = Duration::from_millis(1000);
    let mut copy = true;
    let mut i = 5;
    while i < args.len() {
        match args[i].as_str() {
            "--interval-ms" => {
                i += 1;
                interval = Duration::from_millis(args.get(i).map_or(Ok(1000), |v| v.parse())?);
            }
            "--no-copy" => copy = false,
            other => anyhow::bail!("unknown option {other}"),
        }
        i += 1;
    }
    std::fs::create_dir_all(&dir)?;
    let burst = (bitrate / 8.0 * interval.as_secs_f64()) as usize;
    // The source: pseudo-random bytes, touched once, read in turn (cold by the time they come
    // round again, as a recorder's frames are a fragment old).
    let mut source = vec![0u8; SOURCE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in source.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let cap = burst + 2 * BLOCK;
    let mut out = Vec::new();
    for n in 0..files {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.join(format!("floor-{n}.bin")))?;
        let raw = vec![0u8; cap + BLOCK];
        out.push((f, raw, 0u64, 0usize));
    }
    let (mut bytes, mut calls, mut read_at) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    let c0 = cpu_seconds();
    let mut next = start;
    while start.elapsed().as_secs_f64() < seconds {
        for (f, raw, offset, pending) in out.iter_mut() {
            let base = raw.as_ptr().align_offset(BLOCK);
            let buf = &mut raw[base..base + cap];
            if copy {
                let mut filled = 0;
                while filled < burst {
                    let n = (burst - filled).min(SOURCE - read_at);
                    buf[*pending + filled..*pending + filled + n]
                        .copy_from_slice(&source[read_at..read_at + n]);
                    filled += n;
                    read_at = (read_at + n) % SOURCE;
                }
            }
            let have = *pending + burst;
            let whole = have / BLOCK * BLOCK;
            f.write_all_at(&buf[..whole], *offset)?;
            calls += 1;
            bytes += whole as u64;
            *offset += whole as u64;
            buf.copy_within(whole..have, 0);
            *pending = have - whole;
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = cpu_seconds() - c0;
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"files\":{files},\"bitrate\":{bitrate},\"copy\":{copy},\"elapsed_s\":{elapsed:.3},\"bytes\":{bytes},\"write_calls\":{calls},\"cpu_s\":{cpu:.3},\"cpu_pct\":{:.3}}}",
        cpu / elapsed * 100.0
    );
    for n in 0..files {
        let _ = std::fs::remove_file(dir.join(format!("floor-{n}.bin")));
    }
    Ok(())
}
