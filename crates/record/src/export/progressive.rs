//! `format=mp4`: a range as a progressive MP4, its `moov` (with every sample table: `stts`,
//! `ctts`, `stss`, `stsz`, `stsc`, `co64`) before one `mdat`. Built from the `trun` tables of the
//! fragments an [`Export`] lays out (so it starts at the same keyframe); the sample data is then
//! streamed from the files as it lies, one `trun` being one chunk. The sample tables and the
//! encoded `moov` are in memory (the `moov` is about 25 bytes per sample).

use super::*;

/// A range as a progressive MP4, read like an [`Export`].
pub struct Progressive {
    head: Vec<u8>,
    /// Runs of sample bytes in output order: (part, file offset, length, output offset).
    pieces: Vec<(u32, u64, u64, u64)>,
    files: Vec<std::path::PathBuf>,
    len: u64,
    open: Opener,
}

/// The sample tables of one track.
#[derive(Default)]
struct Tables {
    durations: Vec<mp4_atom::SttsEntry>,
    cts: Vec<mp4_atom::CttsEntry>,
    sync: Vec<u32>,
    sizes: Vec<u32>,
    /// (offset in the mdat's data, samples) per chunk.
    chunks: Vec<(u64, u32)>,
    ticks: u64,
}

impl Tables {
    fn push(&mut self, s: &SampleAt) {
        self.sizes.push(s.size);
        if s.flags & SAMPLE_NON_SYNC == 0 {
            self.sync.push(self.sizes.len() as u32);
        }
        match self.durations.last_mut() {
            Some(e) if e.sample_delta == s.duration => e.sample_count += 1,
            _ => self.durations.push(mp4_atom::SttsEntry {
                sample_count: 1,
                sample_delta: s.duration,
            }),
        }
        match self.cts.last_mut() {
            Some(e) if e.sample_offset == s.cts => e.sample_count += 1,
            _ => self.cts.push(mp4_atom::CttsEntry {
                sample_count: 1,
                sample_offset: s.cts,
            }),
        }
        self.ticks += s.duration as u64;
    }
}

impl Progressive {
    /// Lays out `export`'s fragments as one progressive file: reads every `moof` once more.
    pub fn new(export: &Export, init: &[u8]) -> Result<Progressive, ExportError> {
        let path0 = export.files.first().cloned().unwrap_or_default();
        let bad = |e: String| invalid(&path0, e);
        let (_, at, size) = children(init, 0, init.len())
            .find(|(k, _, _)| k == b"moov")
            .ok_or_else(|| bad("no moov".into()))?;
        let mut moov = Moov::decode(&mut &init[at..at + size]).map_err(|e| bad(format!("moov: {e}")))?;
        let trex = trex_of(init).map_err(bad)?;
        let ids: Vec<u32> = moov.trak.iter().map(|t| t.tkhd.track_id).collect();
        let mut tables: Vec<Tables> = ids.iter().map(|_| Tables::default()).collect();
        let mut pieces: Vec<(u32, u64, u64, u64)> = Vec::new();
        let mut data_len = 0u64;
        let mut file: Option<(u32, File)> = None;
        for f in &export.frags {
            let path = &export.files[f.part as usize];
            if file.as_ref().is_none_or(|(p, _)| *p != f.part) {
                file = Some((f.part, (export.open)(path).map_err(|e| io_err(path, e))?));
            }
            let Some((_, handle)) = &file else {
                continue;
            };
            let moof_bytes = match &f.trimmed {
                Some(t) => t.head[..f.moof_len as usize].to_vec(),
                None => {
                    let mut m = vec![0u8; f.moof_len as usize];
                    handle.read_exact_at(&mut m, f.src).map_err(|e| io_err(path, e))?;
                    m
                }
            };
            let moof =
                Moof::decode(&mut moof_bytes.as_slice()).map_err(|e| invalid(path, format!("moof: {e}")))?;
            // Where a byte at `v` from the fragment's start lies in the file.
            let locate = |v: u64| -> Option<u64> {
                match &f.trimmed {
                    None => Some(f.src + v),
                    Some(t) => {
                        let mut at = v.checked_sub(t.head.len() as u64)?;
                        for &(off, len) in &t.pieces {
                            if at < len {
                                return Some(off + at);
                            }
                            at -= len;
                        }
                        None
                    }
                }
            };
            // (track index, file offset, length, samples) of each run, then sorted into file order.
            let mut runs: Vec<(usize, u64, u64, Vec<SampleAt>)> = Vec::new();
            let mut prev_end = 0u64;
            for (ti, traf) in moof.traf.iter().enumerate() {
                let Some(track) = ids.iter().position(|id| *id == traf.tfhd.track_id) else {
                    continue;
                };
                let base = match traf.tfhd.base_data_offset {
                    Some(b) => b
                        .checked_sub(f.src)
                        .ok_or_else(|| invalid(path, "bad base offset"))?,
                    None if traf.tfhd.default_base_is_moof || ti == 0 => 0,
                    None => prev_end,
                };
                let mut pos = base;
                for (run, samples) in traf.trun.iter().zip(samples_of(traf, &trex)) {
                    if let Some(o) = run.data_offset {
                        pos = base
                            .checked_add_signed(o as i64)
                            .ok_or_else(|| invalid(path, "bad data offset"))?;
                    }
                    let len: u64 = samples.iter().map(|s| s.size as u64).sum();
                    let src = locate(pos).ok_or_else(|| invalid(path, "a run outside its fragment"))?;
                    runs.push((track, src, len, samples));
                    pos += len;
                }
                prev_end = pos;
            }
            runs.sort_by_key(|r| r.1);
            for (track, src, len, samples) in runs {
                if samples.is_empty() {
                    continue;
                }
                let t = &mut tables[track];
                t.chunks.push((data_len, samples.len() as u32));
                for s in &samples {
                    t.push(s);
                }
                if len > 0 {
                    pieces.push((f.part, src, len, data_len));
                }
                data_len += len;
            }
        }
        // The mdat header: 64-bit size past 4 GiB.
        let mdat_head: Vec<u8> = if data_len + 8 <= u32::MAX as u64 {
            let mut h = ((data_len + 8) as u32).to_be_bytes().to_vec();
            h.extend_from_slice(b"mdat");
            h
        } else {
            let mut h = 1u32.to_be_bytes().to_vec();
            h.extend_from_slice(b"mdat");
            h.extend_from_slice(&(data_len + 16).to_be_bytes());
            h
        };
        // Everything of the init but its moov (the ftyp), then the new moov.
        let mut prefix = Vec::new();
        for (k, a, n) in children(init, 0, init.len()) {
            if &k != b"moov" {
                prefix.extend_from_slice(&init[a..a + n]);
            }
        }
        let movie_scale = moov.mvhd.timescale.max(1) as u64;
        moov.mvex = None;
        let mut movie_ticks = 0u64;
        for (trak, t) in moov.trak.iter_mut().zip(&tables) {
            let scale = trak.mdia.mdhd.timescale.max(1) as u64;
            trak.mdia.mdhd.duration = t.ticks;
            trak.tkhd.duration = t.ticks * movie_scale / scale;
            movie_ticks = movie_ticks.max(trak.tkhd.duration);
            let stbl = &mut trak.mdia.minf.stbl;
            stbl.stts = mp4_atom::Stts {
                entries: t.durations.clone(),
            };
            stbl.ctts = (t.cts.len() > 1 || t.cts.first().is_some_and(|e| e.sample_offset != 0)).then(|| {
                mp4_atom::Ctts {
                    entries: t.cts.clone(),
                }
            });
            stbl.stss = (t.sync.len() < t.sizes.len()).then(|| mp4_atom::Stss {
                entries: t.sync.clone(),
            });
            stbl.stsz = mp4_atom::Stsz {
                samples: mp4_atom::StszSamples::Different {
                    sizes: t.sizes.clone(),
                },
            };
            let mut stsc: Vec<mp4_atom::StscEntry> = Vec::new();
            for (i, &(_, n)) in t.chunks.iter().enumerate() {
                if stsc.last().is_none_or(|e| e.samples_per_chunk != n) {
                    stsc.push(mp4_atom::StscEntry {
                        first_chunk: i as u32 + 1,
                        samples_per_chunk: n,
                        sample_description_index: 1,
                    });
                }
            }
            stbl.stsc = mp4_atom::Stsc { entries: stsc };
            stbl.stco = None;
            stbl.co64 = Some(mp4_atom::Co64 {
                entries: t.chunks.iter().map(|c| c.0).collect(),
            });
        }
        moov.mvhd.duration = movie_ticks;
        let encode = |m: &Moov| -> Result<Vec<u8>, ExportError> {
            let mut b = Vec::new();
            m.encode(&mut b).map_err(|e| bad(format!("moov: {e}")))?;
            Ok(b)
        };
        // Chunk offsets are 64-bit whatever their value: the moov's size is known before them.
        let data_start = (prefix.len() + encode(&moov)?.len() + mdat_head.len()) as u64;
        for trak in &mut moov.trak {
            if let Some(co) = &mut trak.mdia.minf.stbl.co64 {
                co.entries.iter_mut().for_each(|o| *o += data_start);
            }
        }
        let mut head = prefix;
        head.extend_from_slice(&encode(&moov)?);
        head.extend_from_slice(&mdat_head);
        if head.len() as u64 != data_start {
            return Err(bad("the moov changed size".into()));
        }
        for p in &mut pieces {
            p.3 += data_start;
        }
        Ok(Progressive {
            len: data_start + data_len,
            head,
            pieces,
            files: export.files.clone(),
            open: export.open.clone(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the output's bytes `[from, to)`.
    pub fn reader(self: &Arc<Self>, from: u64, to: u64) -> ProgressiveReader {
        ProgressiveReader {
            mp4: self.clone(),
            pos: from.min(self.len),
            end: to.min(self.len),
            file: None,
        }
    }
}

/// Reads a byte range of a [`Progressive`]: the header from memory, the samples from the files.
pub struct ProgressiveReader {
    mp4: Arc<Progressive>,
    pos: u64,
    end: u64,
    file: Option<(u32, File)>,
}

impl Read for ProgressiveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        let mp4 = self.mp4.clone();
        if self.pos < mp4.head.len() as u64 {
            let from = self.pos as usize;
            let n = want.min(mp4.head.len() - from);
            buf[..n].copy_from_slice(&mp4.head[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let i = mp4.pieces.partition_point(|p| p.3 <= self.pos) - 1;
        let (part, src, len, out) = mp4.pieces[i];
        let local = self.pos - out;
        let n = want.min((len - local) as usize);
        if self.file.as_ref().is_none_or(|(p, _)| *p != part) {
            self.file = Some((part, (mp4.open)(&mp4.files[part as usize])?));
        }
        let Some((_, file)) = &self.file else {
            return Err(io::Error::other("no file"));
        };
        file.read_exact_at(&mut buf[..n], src + local)?;
        self.pos += n as u64;
        Ok(n)
    }
}
